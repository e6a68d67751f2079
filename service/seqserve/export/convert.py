"""Walk a `KerasModel` and build the ONNX graph: model inputs, every layer call through its
registered converter, model outputs, and the recurrent state inputs/outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from onnx import TensorProto, helper

from seqserve.errors import ExportError
from seqserve.export import registry
from seqserve.export.builder import GraphBuilder
from seqserve.export.context import CallValues, ConvertContext, StateRecord, Value
from seqserve.export.convert_dtypes import ONNX_DTYPES
from seqserve.export.target import CPU, Target
from seqserve.keras.calls import call_inputs, keras_passes_mask
from seqserve.keras.graph import Unresolved, calls_in_order, output_refs
from seqserve.keras.model import KerasModel, Layer, LayerCall, TensorRef

_DTYPES = ONNX_DTYPES
# Classes that hold Python code (or need it) and are therefore refused by name.
_CODE_LAYERS = {"Lambda", "TFOpLambda", "SlicingOpLambda", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"}


@dataclass
class GraphIO:
    name: str
    elem_type: int
    shape: list[int]  # -1 = free


@dataclass
class BuiltGraph:
    model: onnx.ModelProto
    inputs: list[GraphIO]
    outputs: list[GraphIO]
    states: list[StateRecord]
    stateful_layers: list[str]
    vocabulary_sizes: dict[str, int] = field(default_factory=dict)


def build_onnx(model: KerasModel, target: Target = CPU, on_layer: Callable[[Layer], None] | None = None) -> BuiltGraph:
    registry.load_all()
    b = GraphBuilder()
    ctx = ConvertContext(model, b, target)
    by_name = {layer.name: layer for layer in model.layers}

    for layer in model.layers:
        if layer.class_name in _CODE_LAYERS:
            raise ctx.error(layer, f"{layer.class_name} layers contain Python code and cannot be exported")
        if layer.class_name != "InputLayer" and layer.kind not in registry.CONVERTERS:
            where = f" ({layer.module})" if layer.module and layer.module not in ("keras.layers", "keras") else ""
            raise ctx.error(layer, f"unsupported or custom layer class {layer.class_name!r}{where}")
    for ref in [*model.inputs, *model.outputs]:
        if ref.layer not in by_name:
            raise ExportError(f"{model.path}: model refers to unknown layer {ref.layer!r}")

    values: dict[TensorRef, Value] = {}
    inputs: list[GraphIO] = []
    for ref in model.inputs:
        layer = by_name[ref.layer]
        if layer.class_name != "InputLayer":
            raise ctx.error(layer, "model input is not an InputLayer")
        shape = list(layer.config.get("batch_shape") or [])
        dtype = _DTYPES.get(str(layer.config.get("dtype", "float32")))
        if dtype is None or not shape:
            raise ctx.error(layer, f"unsupported input dtype/shape {layer.config.get('dtype')} {shape}")
        dims: list[int | str | None] = ["batch"] + [
            d if d is not None else f"{layer.name}_dim{i + 1}" for i, d in enumerate(shape[1:])
        ]
        b.add_input(layer.name, dtype, dims)
        values[TensorRef(layer.name)] = Value(layer.name, (None, *shape[1:]), dtype)
        inputs.append(GraphIO(layer.name, dtype, [-1] + [-1 if d is None else int(d) for d in shape[1:]]))

    # Output names are the Keras layer names (+ "_k" for further tensors): keep them free.
    for ref in model.outputs:
        for k in range(10):
            b.scope.reserve(ref.layer if k == 0 else f"{ref.layer}_{k}")

    try:
        for layer, i, call in calls_in_order(model, values.__contains__):
            values.update(_convert_call(ctx, layer, i, call, values))
            if on_layer is not None:
                on_layer(layer)
    except Unresolved as e:
        raise ctx.error(e.layer, str(e)) from None

    out_refs = output_refs(model, values.__contains__)
    out_names = _output_names(model, out_refs)
    outputs: list[GraphIO] = []
    for ref, name in zip(out_refs, out_names, strict=False):
        v = values.get(ref)
        if v is None:
            raise ExportError(f"{model.path}: model output {ref.layer}[{ref.node}][{ref.tensor}] is never produced")
        b.scope.reserve(name)
        b.op_into("Identity", [v.name], [name])
        b.add_output(name, v.dtype, ["batch", *v.shape[1:]])
        outputs.append(GraphIO(name, v.dtype, [-1] + [-1 if d is None else int(d) for d in v.shape[1:]]))
    for s in ctx.states:
        if s.tensor is None:
            raise ctx.error(s.layer, f"state {s.kind} has no final value")
        b.op_into("Identity", [s.tensor], [s.output])
        b.add_output(s.output, TensorProto.FLOAT, ["batch", *s.shape[1:]])
    onnx_model = b.model(model.name, doc=f"exported by seqserve from {model.path}")
    return BuiltGraph(onnx_model, inputs, outputs, ctx.states, ctx.stateful_layers, ctx.vocabulary_sizes)


def _convert_call(
    ctx: ConvertContext, layer: Layer, i: int, call: LayerCall, values: dict[TensorRef, Value]
) -> dict[TensorRef, Value]:
    """One call of a layer through its converter: the values it produces, by reference."""
    if not call.inputs:
        raise ctx.error(layer, "layer call has no inputs")
    in_refs, state_refs = call_inputs(ctx.model, layer, call)
    ins = [values[r] for r in in_refs]
    if call.mask is not None:
        # An explicit mask (Keras 3 functional) is the mask of the first input.
        m = values[call.mask]
        ins[0] = replace(ins[0], mask=m.name if m.rank == 2 else None)
    cv = CallValues(ins, [values[r] for r in state_refs], call.kwargs, call.args, keras_passes_mask(ctx.model, call))
    ctx.call_index = i
    try:
        outs = registry.CONVERTERS[layer.kind](ctx, layer, cv)
    except ExportError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        # A config or weight that does not look like what this Keras class writes.
        raise ctx.error(layer, f"malformed {layer.class_name} config or weights ({type(e).__name__}: {e})") from None
    return {TensorRef(layer.name, i, t): v for t, v in enumerate(outs)}


def _output_names(model: KerasModel, refs: list[TensorRef]) -> list[str]:
    """Graph output names: the Keras output layer's name; where Keras repeats one (a layer returning
    output and states), the later ones get `_<k>` like tf.keras (`lstm`, `lstm_1`, `lstm_2`), never
    taking a name another output layer has."""
    taken = {ref.layer for ref in model.inputs}
    names: list[str | None] = [None] * len(refs)
    for i, ref in enumerate(refs):  # plain layer names first, so they stay what the user named them
        if ref.layer not in taken:
            names[i] = ref.layer
            taken.add(ref.layer)
    for i, ref in enumerate(refs):
        if names[i] is None:
            k = max(ref.tensor, 1)
            while f"{ref.layer}_{k}" in taken:
                k += 1
            names[i] = f"{ref.layer}_{k}"
            taken.add(names[i])
    return [n for n in names if n is not None]


def np_dtype(elem_type: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
