"""Walk a `KerasModel` and build the ONNX graph: model inputs, every layer call through its
registered converter, model outputs, and the recurrent state inputs/outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import TensorProto, helper

from seqserve.errors import ExportError
from seqserve.export import registry
from seqserve.export.builder import GraphBuilder
from seqserve.export.context import CallValues, ConvertContext, StateRecord, Value
from seqserve.export.convert_dtypes import ONNX_DTYPES
from seqserve.keras.config import keras3_tensors
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


def build_onnx(model: KerasModel, target: str = "cpu", on_layer: Callable[[Layer], None] | None = None) -> BuiltGraph:
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

    pending = [
        (layer, i) for layer in model.layers if layer.class_name != "InputLayer" for i in range(len(layer.calls))
    ]
    while pending:
        progressed = False
        rest = []
        for layer, i in pending:
            call = layer.calls[i]
            refs = [*call.inputs, *call.initial_state, *([call.mask] if call.mask else [])]
            if not all(r in values for r in refs):
                rest.append((layer, i))
                continue
            if not call.inputs:
                raise ctx.error(layer, "layer call has no inputs")
            in_refs, state_refs = call_inputs(model, layer, call)
            ins = [values[r] for r in in_refs]
            if call.mask is not None:
                # An explicit mask (Keras 3 functional) is the mask of the first input.
                m = values[call.mask]
                ins[0] = replace(ins[0], mask=m.name if m.rank == 2 else None)
            masked = call.mask is not None or keras_passes_mask(model, call)
            cv = CallValues(ins, [values[r] for r in state_refs], call.kwargs, call.args, masked)
            ctx.call_index = i
            try:
                outs = registry.CONVERTERS[layer.kind](ctx, layer, cv)
            except ExportError:
                raise
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
                # A config or weight that does not look like what this Keras class writes.
                raise ctx.error(
                    layer, f"malformed {layer.class_name} config or weights ({type(e).__name__}: {e})"
                ) from None
            for t, v in enumerate(outs):
                values[TensorRef(layer.name, i, t)] = v
            if on_layer is not None:
                on_layer(layer)
            progressed = True
        if not progressed:
            missing = sorted({r.layer for layer, i in rest for r in layer.calls[i].inputs if r not in values})
            raise ctx.error(rest[0][0], f"inputs never produced (from {', '.join(missing)})")
        pending = rest

    out_refs: list[TensorRef] = []
    for ref in model.outputs:
        if ref.tensor == -1:
            n = 0
            while TensorRef(ref.layer, ref.node, n) in values:
                out_refs.append(TensorRef(ref.layer, ref.node, n))
                n += 1
        else:
            out_refs.append(ref)
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
    return BuiltGraph(onnx_model, inputs, outputs, ctx.states, ctx.stateful_layers)


# Layers whose `call(sequences, initial_state=None, mask=None, ...)` takes states (Keras 3).
_STATE_CALLS = {
    "LSTM",
    "GRU",
    "SimpleRNN",
    "RNN",
    "Bidirectional",
    "ConvLSTM1D",
    "ConvLSTM2D",
    "ConvLSTM3D",
}


def call_inputs(model: KerasModel, layer: Layer, call: LayerCall) -> tuple[list[TensorRef], list[TensorRef]]:
    """(inputs, initial states) of a call. A Keras 3 recurrent layer may get its states as the
    second positional argument, `lstm(x, [h, c])` (`call(sequences, initial_state, ...)`); the
    reader lists those tensors among the inputs."""
    args = call.args
    if (
        model.keras_major >= 3
        and layer.class_name in _STATE_CALLS
        and not call.initial_state
        and len(args) >= 2
        and keras3_tensors(args[1])
        and not any(keras3_tensors(a) for a in args[2:])
    ):
        n = len(keras3_tensors(args[0]))
        if 0 < n < len(call.inputs):
            return call.inputs[:n], call.inputs[n:]
    return call.inputs, call.initial_state


def keras_passes_mask(model: KerasModel, call: LayerCall) -> bool:
    """Whether Keras hands the first input's mask to the layer's `call()` (no explicit `mask=`).

    Keras 3, `Layer.__call__` (keras/src/layers/layer.py, "6. Populate mask argument(s)"): `mask`
    is filled in from the inputs' `_keras_mask` only when the call has exactly one tensor argument
    (`CallSpec.tensor_arguments_dict`; a list of tensors is one argument). `lstm(x,
    initial_state=[h, c])` or `lstm(x, [h, c])` has two, so the layer runs unmasked; its output
    still gets compute_mask(x, mask of x) (`previous_mask` falls back to the first argument's).
    Keras 2 (tf_keras `RNN.__call__` / `Bidirectional.__call__`) folds Keras-tensor states into
    the inputs list, `Layer._get_input_masks` passes the list of masks and `RNN.call` uses the
    first: masked.
    """
    if model.keras_major < 3:
        return True
    n_args = sum(1 for a in call.args if keras3_tensors(a)) if call.args else 1
    return n_args + (1 if call.initial_state else 0) <= 1


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
