"""Feed-forward layers real recurrent models are built with: Dense, Embedding, Masking, Activation,
Dropout (no-op at inference), BatchNormalization, TimeDistributed."""

from __future__ import annotations

import numpy as np

from seqserve.export import activations
from seqserve.export.builder import BOOL, FLOAT, INT64
from seqserve.export.context import CallValues, ConvertContext, Value
from seqserve.export.registry import CONVERTERS, register
from seqserve.keras.calls import IDENTITY_AT_INFERENCE
from seqserve.keras.model import Layer


def _activate(ctx: ConvertContext, layer: Layer, x: str) -> str:
    name = activations.activation_name(layer.config.get("activation", "linear"))
    if name is None or not activations.is_supported(name):
        raise ctx.error(layer, f"unsupported activation {layer.config.get('activation')!r}")
    return activations.apply(ctx.b, name, x, ctx.keras_major)


def _features(ctx: ConvertContext, layer: Layer, x: Value) -> int:
    if x.rank < 2 or x.shape[-1] is None:
        raise ctx.error(layer, f"needs a known last dimension, got shape {x.shape}")
    return int(x.shape[-1])


@register("Dense")
def dense(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    x = call.x
    units = int(layer.config["units"])
    use_bias = bool(layer.config.get("use_bias", True))
    shapes = [(_features(ctx, layer, x), units)] + ([(units,)] if use_bias else [])
    w = ctx.weights(layer, shapes, ["kernel", "bias"][: len(shapes)])
    b = ctx.b
    y = b.op("MatMul", [x.name, b.const(w[0], f"{layer.name}_kernel")], layer.name)
    if use_bias:
        y = b.op("Add", [y, b.const(w[1], f"{layer.name}_bias")], layer.name)
    y = _activate(ctx, layer, y)
    return [Value(y, (*x.shape[:-1], units), FLOAT, x.mask)]


@register("Activation")
def activation(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    x = call.x
    return [Value(_activate(ctx, layer, x.name), x.shape, x.dtype, x.mask)]


@register(*sorted(IDENTITY_AT_INFERENCE))
def identity(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    """No-ops at inference: the value and its mask pass through."""
    return [call.x]


@register("Embedding")
def embedding(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    x = call.x
    cfg = layer.config
    n, d = int(cfg["input_dim"]), int(cfg["output_dim"])
    (w,) = ctx.weights(layer, [(n, d)], ["embeddings"])
    ctx.token_ids(x, n)  # the server refuses ids Gather would fail on (or wrap) before batching
    b = ctx.b
    ids = x.name if x.dtype == INT64 else b.op("Cast", [x.name], f"{layer.name}_ids", to=INT64)
    y = b.op("Gather", [b.const(w, f"{layer.name}_embeddings"), ids], layer.name, axis=0)
    mask = None
    if cfg.get("mask_zero", False):
        zero = b.const(0, "zero_like_ids", _np_dtype(x.dtype))
        mask = b.op("Not", [b.op("Equal", [x.name, zero])], f"{layer.name}_mask")
        if x.rank != 2:
            mask = None  # only [batch, time] masks feed recurrent layers
    return [Value(y, (*x.shape, d), FLOAT, mask)]


def _np_dtype(onnx_type: int) -> type:
    from onnx import helper

    return helper.tensor_dtype_to_np_dtype(onnx_type)


@register("Masking")
def masking(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    x = call.x
    b = ctx.b
    value = float(layer.config.get("mask_value", 0.0))
    differs = b.op("Cast", [b.op("Not", [b.op("Equal", [x.name, b.const(value)])])], to=FLOAT)
    keep = b.op("Cast", [b.op("ReduceMax", [differs], axes=[-1], keepdims=1)], f"{layer.name}_keep", to=BOOL)
    y = b.op("Where", [keep, x.name, b.const(0.0, "zero")], layer.name)
    mask = b.op("Squeeze", [keep, b.i64([-1])], f"{layer.name}_mask")
    return [Value(y, x.shape, x.dtype, mask)]


@register("BatchNormalization")
def batch_norm(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    x = call.x
    cfg = layer.config
    axis = cfg.get("axis", -1)
    if isinstance(axis, list):
        if len(axis) != 1:
            raise ctx.error(layer, f"BatchNormalization over several axes {axis} is not supported")
        axis = axis[0]
    axis = int(axis) % x.rank
    if x.shape[axis] is None:
        raise ctx.error(layer, "BatchNormalization axis has an unknown size")
    n = int(x.shape[axis])
    scale, center = bool(cfg.get("scale", True)), bool(cfg.get("center", True))
    names = (["gamma"] if scale else []) + (["beta"] if center else []) + ["moving_mean", "moving_variance"]
    w = ctx.weights(layer, [(n,)] * len(names), names)
    by = dict(zip(names, w, strict=False))
    eps = float(cfg.get("epsilon", 1e-3))
    inv = 1.0 / np.sqrt(by["moving_variance"].astype(np.float64) + eps)
    mul = inv * (by["gamma"].astype(np.float64) if scale else 1.0)
    add = (by["beta"].astype(np.float64) if center else 0.0) - by["moving_mean"].astype(np.float64) * mul
    if axis == 0:
        raise ctx.error(layer, "BatchNormalization over the batch axis is not supported")
    shape = [n if i == axis else 1 for i in range(1, x.rank)]
    b = ctx.b
    y = b.op("Mul", [x.name, b.const(mul.astype(np.float32).reshape(shape), f"{layer.name}_scale")])
    y = b.op("Add", [y, b.const(add.astype(np.float32).reshape(shape), f"{layer.name}_shift")], layer.name)
    return [Value(y, x.shape, FLOAT, x.mask)]


@register("TimeDistributed")
def time_distributed(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    """Apply the wrapped layer to every timestep: fold time into batch, convert, unfold."""
    x = call.x
    inner_spec = layer.config.get("layer") or {}
    inner_cls = str(inner_spec.get("class_name"))
    inner_cfg = dict(inner_spec.get("config") or {})
    conv = CONVERTERS.get(inner_cls)
    if conv is None or inner_cls in ("TimeDistributed",) or inner_cls in _RECURRENT:
        raise ctx.error(layer, f"TimeDistributed({inner_cls}) is not supported")
    if any(d is None for d in x.shape[2:]):
        raise ctx.error(layer, "TimeDistributed needs known per-timestep dimensions")
    b = ctx.b
    inner = Layer(layer.name, inner_cls, inner_cfg, layer.weights)
    folded = b.op("Reshape", [x.name, b.i64([-1, *x.shape[2:]])], f"{layer.name}_folded")
    out = conv(ctx, inner, CallValues([Value(folded, (None, *x.shape[2:]), x.dtype)]))[0]
    bt = b.op("Shape", [x.name], f"{layer.name}_bt", start=0, end=2)
    shape = b.op("Concat", [bt, b.i64([int(d) for d in out.shape[1:]])], axis=0) if out.rank > 1 else bt
    y = b.op("Reshape", [out.name, shape], layer.name)
    return [Value(y, (x.shape[0], x.shape[1], *out.shape[1:]), out.dtype, x.mask)]


_RECURRENT = {"LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM2D"}
