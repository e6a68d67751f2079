"""The feed-forward layers recurrent models are built with, and Keras 3's op layers, in NumPy.

Each takes the call's inputs (value and mask) and returns its outputs with the mask Keras gives
them (`compute_mask`). One function per layer class, looked up in `LAYERS` / `OPS`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from seqserve.keras.calls import IDENTITY_AT_INFERENCE
from seqserve.keras.model import Layer
from seqserve.reference.activations import Array, NoReference, activation_fn
from seqserve.reference.recurrent import Masked

# (layer, its inputs, its float64 weights, Keras major, evaluate another layer) -> its outputs
LayerFn = Callable[[Layer, list[Masked], list[Array], int, "Evaluate"], list[Masked]]
Evaluate = Callable[[Layer, list[Masked]], list[Masked]]


def _dense(layer: Layer, ins: list[Masked], w: list[Array], km: int, _: Evaluate) -> list[Masked]:
    x, m = ins[0]
    y = x @ w[0] + (w[1] if len(w) > 1 else 0)
    return [(activation_fn(layer.config.get("activation"), km)(y), m)]


def _activation(layer: Layer, ins: list[Masked], w: list[Array], km: int, _: Evaluate) -> list[Masked]:
    x, m = ins[0]
    return [(activation_fn(layer.config.get("activation"), km)(x), m)]


def _identity(layer: Layer, ins: list[Masked], w: list[Array], km: int, _: Evaluate) -> list[Masked]:
    return [ins[0]]


def _embedding(layer: Layer, ins: list[Masked], w: list[Array], km: int, _: Evaluate) -> list[Masked]:
    x = ins[0][0]
    mask = (x != 0) if layer.config.get("mask_zero") and x.ndim == 2 else None
    return [(w[0][x.astype(np.int64)], mask)]


def _masking(layer: Layer, ins: list[Masked], w: list[Array], km: int, _: Evaluate) -> list[Masked]:
    x = ins[0][0]
    keep = np.any(x != float(layer.config.get("mask_value", 0.0)), axis=-1)
    return [(np.where(keep[..., None], x, 0.0), keep)]


def _batch_norm(layer: Layer, ins: list[Masked], w: list[Array], km: int, _: Evaluate) -> list[Masked]:
    x, m = ins[0]
    cfg = layer.config
    names = (["g"] if cfg.get("scale", True) else []) + (["b"] if cfg.get("center", True) else []) + ["m", "v"]
    p = dict(zip(names, w, strict=False))
    y = (x - p["m"]) / np.sqrt(p["v"] + float(cfg.get("epsilon", 1e-3)))
    return [(y * p.get("g", 1.0) + p.get("b", 0.0), m)]


def _time_distributed(layer: Layer, ins: list[Masked], w: list[Array], km: int, evaluate: Evaluate) -> list[Masked]:
    x, m = ins[0]
    spec = layer.config["layer"]
    inner = Layer(layer.name, spec["class_name"], spec.get("config") or {}, layer.weights)
    y = evaluate(inner, [(x.reshape(-1, *x.shape[2:]), None)])[0][0]
    return [(y.reshape(x.shape[0], x.shape[1], *y.shape[1:]), m)]


def _flatten(layer: Layer, ins: list[Masked], w: list[Array], km: int, _: Evaluate) -> list[Masked]:
    x = ins[0][0]
    return [(x.reshape(x.shape[0], -1), None)]


def _reshape(layer: Layer, ins: list[Masked], w: list[Array], km: int, _: Evaluate) -> list[Masked]:
    x = ins[0][0]
    return [(x.reshape(x.shape[0], *layer.config["target_shape"]), None)]


def _repeat_vector(layer: Layer, ins: list[Masked], w: list[Array], km: int, _: Evaluate) -> list[Masked]:
    return [(np.repeat(ins[0][0][:, None], int(layer.config["n"]), axis=1), None)]


def _merge(layer: Layer, ins: list[Masked], w: list[Array], km: int, _: Evaluate) -> list[Masked]:
    """Concatenate and Add: the inputs' masks are or-ed (where every input has one)."""
    x = ins[0][0]
    masks = [v[1] for v in ins]
    mask = None if any(mm is None for mm in masks) else np.logical_or.reduce(masks)
    if layer.class_name == "Add":
        return [(sum(v[0] for v in ins), mask)]
    axis = int(layer.config.get("axis", -1)) % x.ndim
    return [(np.concatenate([v[0] for v in ins], axis=axis), mask if axis == x.ndim - 1 else None)]


def _outputs(layer: Layer, ins: list[Masked], w: list[Array], km: int, _: Evaluate) -> list[Masked]:
    return list(ins)


LAYERS: dict[str, LayerFn] = {
    "Dense": _dense,
    "Activation": _activation,
    **dict.fromkeys(IDENTITY_AT_INFERENCE, _identity),
    "Embedding": _embedding,
    "Masking": _masking,
    "BatchNormalization": _batch_norm,
    "TimeDistributed": _time_distributed,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "RepeatVector": _repeat_vector,
    "Concatenate": _merge,
    "Add": _merge,
    "_Alias": _identity,
    "_Outputs": _outputs,
}

_BINARY = {
    "NotEqual": np.not_equal,
    "Equal": np.equal,
    "Greater": np.greater,
    "Less": np.less,
    "LogicalOr": np.logical_or,
    "LogicalAnd": np.logical_and,
}


def op(cls: str, cfg: dict[str, Any], ins: list[Masked], args: list[Any]) -> Array:
    """Keras 3 op layers (the mask computations functional configs record). `args` are the call's
    raw positional arguments: a tensor where a dict, a constant operand otherwise."""
    it = iter(ins)
    operands = [next(it)[0] if isinstance(a, dict) else a for a in args]
    x = ins[0][0]
    if cls in _BINARY:
        return _BINARY[cls](operands[0], operands[1])
    if cls == "LogicalNot":
        return np.logical_not(x)
    if cls in ("Any", "All"):
        axis = cfg.get("axis")
        reduce = np.any if cls == "Any" else np.all
        return reduce(x, axis=tuple(axis) if isinstance(axis, list) else axis, keepdims=bool(cfg.get("keepdims")))
    if cls == "ExpandDims":
        return np.expand_dims(x, int(cfg.get("axis", -1)))
    if cls == "Squeeze":
        axis = cfg.get("axis")
        return np.squeeze(x, tuple(axis) if isinstance(axis, list) else axis)
    if cls in ("ZerosLike", "OnesLike", "Cast"):
        dt = cfg.get("dtype")
        dt = dt.get("config", {}).get("name") if isinstance(dt, dict) else dt
        if cls == "Cast":
            return x.astype(dt or x.dtype)
        return (np.zeros_like if cls == "ZerosLike" else np.ones_like)(x, dtype=dt or x.dtype)
    if cls == "Concatenate":
        return np.concatenate([v[0] for v in ins], axis=int(cfg.get("axis", 0)))
    raise NoReference(cls)
