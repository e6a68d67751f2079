"""Turn a Keras model config (Keras 3 or Keras 1/2 JSON) into layers and calls.

Only plain data is read: class names, configs and the graph wiring. Nothing is imported or executed
from the file; classes the exporter does not know are reported later, by name.
"""

from __future__ import annotations

import math
from typing import Any

from seqserve.errors import ExportError
from seqserve.keras.calls import STATE_TAKING_LAYERS, keras3_tensors
from seqserve.keras.model import ALIAS, OUTPUTS, Layer, LayerCall, TensorRef
from seqserve.shapes import MAX_DIMENSIONS

MODEL_CLASSES = {"Sequential", "Functional", "Model"}
# An input may have at most as many dimensions as a served tensor, and one sample at most this many
# values (256 MiB of FP32; a 100-frame 256x256 RGB clip is 20M).
MAX_SAMPLE_ELEMENTS = 2**26


def parse_model_config(config: Any, path: str) -> tuple[str, list[Layer], list[TensorRef], list[TensorRef]]:
    """(model name, layers, inputs, outputs) of a serialized model."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise ExportError(f"{path}: model config is not a Keras model config")
    cls = config["class_name"]
    body = config.get("config")
    if not isinstance(body, dict):
        raise ExportError(f"{path}: model config of class {cls} has no 'config' object")
    if cls == "Sequential":
        return _sequential(body, config, path)
    if cls in ("Functional", "Model"):
        return _functional(body, path)
    raise ExportError(
        f"{path}: top-level class {cls!r} is not a Sequential or functional model "
        "(subclassed models carry Python code and cannot be exported)"
    )


def _layer_name(entry: dict[str, Any]) -> str:
    name = entry.get("name") or (entry.get("config") or {}).get("name")
    if not isinstance(name, str):
        raise ExportError(f"layer of class {entry.get('class_name')!r} has no name")
    return name


def _new_layer(entry: dict[str, Any], path: str) -> Layer:
    if not isinstance(entry, dict) or "class_name" not in entry:
        raise ExportError(f"{path}: malformed layer entry {str(entry)[:80]!r}")
    cfg = entry.get("config")
    if not isinstance(cfg, dict):
        cfg = {}
    name = _layer_name(entry) if entry.get("name") or cfg.get("name") else entry["class_name"].lower()
    if entry["class_name"] == "InputLayer":
        shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
        if shape is None:
            raise ExportError(f"{path}: layer {name!r}: InputLayer without a shape")
        return _input_layer(name, shape, cfg.get("dtype"), path)
    module = entry.get("module")
    return Layer(
        name=name, class_name=str(entry["class_name"]), config=cfg, module=module if isinstance(module, str) else None
    )


def _input_layer(name: str, batch_shape: Any, dtype: Any, path: str) -> Layer:
    _check_input_shape(name, batch_shape, path)
    return Layer(
        name=name,
        class_name="InputLayer",
        config={"name": name, "batch_shape": list(batch_shape), "dtype": _dtype_name(dtype)},
    )


def _check_input_shape(name: str, batch_shape: Any, path: str) -> None:
    """An input shape the export can build and test: ONNX Runtime aborts the process on a zero-step
    sequence, and the parity check feeds two samples of the shape, so it must fit in memory."""
    problem = None
    if not isinstance(batch_shape, list | tuple) or not 1 <= len(batch_shape) <= MAX_DIMENSIONS:
        problem = f"must be a list of 1 to {MAX_DIMENSIONS} dimensions"
    elif not all(d is None or (type(d) is int and d > 0) for d in batch_shape):
        problem = "must hold positive integers (or null for any size)"
    elif math.prod(d for d in batch_shape[1:] if d is not None) > MAX_SAMPLE_ELEMENTS:
        problem = f"describes more than {MAX_SAMPLE_ELEMENTS:,} values per sample"
    if problem:
        raise ExportError(f"{path}: layer {name!r}: input shape {str(batch_shape)[:80]} {problem}")


def _dtype_name(dtype: Any) -> str:
    if isinstance(dtype, dict):  # Keras 3 DTypePolicy
        return str((dtype.get("config") or {}).get("name", "float32"))
    return str(dtype or "float32")


def _sequential(
    body: dict[str, Any], top: dict[str, Any], path: str
) -> tuple[str, list[Layer], list[TensorRef], list[TensorRef]]:
    entries = body.get("layers")
    if not isinstance(entries, list) or not entries:
        raise ExportError(f"{path}: Sequential model has no layers")
    nested = {i: e for i, e in enumerate(entries) if isinstance(e, dict) and e.get("class_name") in MODEL_CLASSES}
    if 0 in nested:
        raise ExportError(f"{path}: a Sequential model starting with a nested model is not supported")
    layers = [
        _new_layer(e, path) if i not in nested else Layer(str(_layer_name(e)), "__nested__", {})
        for i, e in enumerate(entries)
    ]
    if layers[0].class_name != "InputLayer":
        first = layers[0].config
        shape = first.get("batch_shape") or first.get("batch_input_shape")
        if shape is None:
            shape = body.get("build_input_shape") or (top.get("build_config") or {}).get("input_shape")
        if shape is None:
            raise ExportError(f"{path}: layer {layers[0].name!r}: Sequential model has no input shape")
        layers.insert(0, _input_layer(f"{layers[0].name}_input", shape, first.get("dtype"), path))
    prev = TensorRef(layers[0].name)
    offset = len(layers) - len(entries)
    flat: list[Layer] = [layers[0]]
    for i, layer in enumerate(layers[1:], start=1):
        if layer.class_name == "InputLayer":
            raise ExportError(f"{path}: layer {layer.name!r}: InputLayer in the middle of a Sequential model")
        if layer.class_name == "__nested__":
            flat.extend(_inline(entries[i - offset], [LayerCall(inputs=[prev])], path))
        else:
            layer.calls.append(LayerCall(inputs=[prev]))
            flat.append(layer)
        prev = TensorRef(layer.name)
    layers = flat
    _check_unique(layers, path)
    # tensor -1: every output of the last layer (a Sequential ending in return_state returns them all)
    last = TensorRef(prev.layer, 0, -1)
    return str(body.get("name", "sequential")), layers, [TensorRef(layers[0].name)], [last]


def _refs(spec: Any) -> list[TensorRef]:
    """`input_layers` / `output_layers`: [name, node, tensor] or a list of those (or a dict of them)."""
    if isinstance(spec, dict):
        spec = list(spec.values())
    if isinstance(spec, list) and spec and isinstance(spec[0], str):
        spec = [spec]
    out = []
    for item in spec or []:
        if not (isinstance(item, list) and len(item) >= 3):
            raise ExportError(f"malformed model input/output reference {item!r}")
        out.append(TensorRef(str(item[0]), int(item[1]), int(item[2])))
    return out


def _legacy_ref(item: Any) -> TensorRef | None:
    if isinstance(item, list) and len(item) >= 3 and isinstance(item[0], str):
        return TensorRef(item[0], int(item[1]), int(item[2]))
    return None


def _parse_call(layer: Layer, node: Any, path: str) -> LayerCall:
    if isinstance(node, dict):  # Keras 3
        inputs = keras3_tensors(node.get("args", []))
        kwargs = dict(node.get("kwargs") or {})
        initial = keras3_tensors(kwargs.pop("initial_state", None))
        masks = keras3_tensors(kwargs.pop("mask", None))
        for key, value in kwargs.items():
            if keras3_tensors(value):
                raise ExportError(f"{path}: layer {layer.name!r}: tensor-valued call argument {key!r} is not supported")
        args = node.get("args", [])
        return LayerCall(
            inputs=inputs,
            initial_state=initial,
            kwargs=kwargs,
            mask=masks[0] if len(masks) == 1 else None,
            args=list(args) if isinstance(args, list) else [],
        )
    if isinstance(node, list):  # Keras 1/2: [[name, node, tensor, kwargs], ...]
        inputs = []
        initial: list[TensorRef] = []
        kwargs: dict[str, Any] = {}
        for item in node:
            ref = _legacy_ref(item)
            if ref is None:
                raise ExportError(f"{path}: layer {layer.name!r}: malformed inbound node {str(item)[:80]}")
            inputs.append(ref)
            if len(item) > 3 and isinstance(item[3], dict):
                for key, value in item[3].items():
                    if key == "initial_state":
                        vals = value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
                        initial.extend(r for r in (_legacy_ref(v) for v in vals) if r is not None)
                    elif key in ("mask", "training") or not isinstance(value, list):
                        kwargs[key] = value
                    else:
                        raise ExportError(
                            f"{path}: layer {layer.name!r}: tensor-valued call argument {key!r} is not supported"
                        )
        if layer.class_name in STATE_TAKING_LAYERS and len(inputs) > 1 and not initial:
            initial = inputs[1:]
            inputs = inputs[:1]
        return LayerCall(inputs=inputs, initial_state=initial, kwargs=kwargs)
    raise ExportError(f"{path}: layer {layer.name!r}: malformed inbound node")


def _functional(body: dict[str, Any], path: str) -> tuple[str, list[Layer], list[TensorRef], list[TensorRef]]:
    entries = body.get("layers")
    if not isinstance(entries, list) or not entries:
        raise ExportError(f"{path}: functional model has no layers")
    layers = []
    for entry in entries:
        if isinstance(entry, dict) and entry.get("class_name") in MODEL_CLASSES:
            holder = Layer(_layer_name(entry), str(entry["class_name"]), {})
            calls = [_parse_call(holder, node, path) for node in entry.get("inbound_nodes") or []]
            layers.extend(_inline(entry, calls, path))
            continue
        layer = _new_layer(entry, path)
        if layer.class_name != "InputLayer":
            for node in entry.get("inbound_nodes") or []:
                layer.calls.append(_parse_call(layer, node, path))
        layers.append(layer)
    _check_unique(layers, path)
    inputs = _refs(body.get("input_layers"))
    outputs = _refs(body.get("output_layers"))
    # A nested model's first outer call may be its node 1 (node 0 is its own graph): the inlined
    # model has exactly one call, so every reference to it means that call.
    nested = {layer.name for layer in layers if layer.class_name == OUTPUTS}
    if nested:

        def fix(refs: list[TensorRef]) -> list[TensorRef]:
            return [TensorRef(r.layer, 0, r.tensor) if r.layer in nested else r for r in refs]

        for layer in layers:
            for call in layer.calls:
                call.inputs, call.initial_state = fix(call.inputs), fix(call.initial_state)
                if call.mask is not None:
                    call.mask = fix([call.mask])[0]
        outputs = fix(outputs)
    if not inputs or not outputs:
        raise ExportError(f"{path}: functional model without input_layers/output_layers")
    return str(body.get("name", "model")), layers, inputs, outputs


def _inline(entry: dict[str, Any], calls: list[LayerCall], path: str) -> list[Layer]:
    """A nested model's layers, wired into the outer graph (one call of the nested model only)."""
    name = _layer_name(entry)
    if len(calls) != 1:
        raise ExportError(f"{path}: layer {name!r}: a nested model called {len(calls)} times is not supported")
    call = calls[0]
    _, sub_layers, sub_inputs, sub_outputs = parse_model_config(entry, path)
    if len(call.inputs) != len(sub_inputs):
        raise ExportError(
            f"{path}: layer {name!r}: nested model called with {len(call.inputs)} inputs, it has {len(sub_inputs)}"
        )
    feeds = {ref.layer: outer for ref, outer in zip(sub_inputs, call.inputs, strict=True)}
    out: list[Layer] = []
    for layer in sub_layers:
        if layer.class_name == "InputLayer":
            if layer.name not in feeds:
                raise ExportError(f"{path}: layer {layer.name!r}: unused input of nested model {name!r}")
            layer = Layer(layer.name, ALIAS, {}, calls=[LayerCall(inputs=[feeds[layer.name]])])
        layer.parent = layer.parent or name
        out.append(layer)
    # A nested Sequential's output is the last layer's first tensor.
    outputs = [TensorRef(r.layer, r.node, max(r.tensor, 0)) for r in sub_outputs]
    out.append(Layer(name, OUTPUTS, {}, calls=[LayerCall(inputs=outputs)]))
    return out


def _check_unique(layers: list[Layer], path: str) -> None:
    seen: set[str] = set()
    for layer in layers:
        if layer.name in seen:
            raise ExportError(f"{path}: layer {layer.name!r}: two layers share this name (nested models?)")
        seen.add(layer.name)
