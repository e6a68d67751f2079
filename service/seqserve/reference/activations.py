"""Keras activations in NumPy (float64), with Keras' formulas; hard_sigmoid per Keras version."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from seqserve.keras.activations import activation_name

Array = np.ndarray


class NoReference(Exception):
    """The model holds a layer class (or activation) this reference does not implement."""


def _sigmoid(x: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _softplus(x: Array) -> Array:
    return np.logaddexp(0.0, x)


def _erf(x: Array) -> Array:
    from math import erf

    return np.vectorize(erf)(x)


def activation_fn(spec: Any, keras_major: int) -> Callable[[Array], Array]:
    """The NumPy function of a serialized Keras activation (a name, or a Keras 3 object config)."""
    name = activation_name(spec)
    hs = (lambda x: np.clip(x / 6.0 + 0.5, 0, 1)) if keras_major >= 3 else (lambda x: np.clip(0.2 * x + 0.5, 0, 1))
    table: dict[str, Callable[[Array], Array]] = {
        "linear": lambda x: x,
        "tanh": np.tanh,
        "sigmoid": _sigmoid,
        "relu": lambda x: np.maximum(x, 0),
        "relu6": lambda x: np.clip(x, 0, 6),
        "leaky_relu": lambda x: np.where(x >= 0, x, 0.2 * x),
        "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
        "selu": lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(np.minimum(x, 0))),
        "celu": lambda x: np.maximum(x, 0) + np.minimum(0, np.expm1(np.minimum(x, 0))),
        "softplus": _softplus,
        "softsign": lambda x: x / (1 + np.abs(x)),
        "exponential": np.exp,
        "hard_sigmoid": hs,
        "hard_silu": lambda x: x * np.clip(x / 6.0 + 0.5, 0, 1),
        "hard_swish": lambda x: x * np.clip(x / 6.0 + 0.5, 0, 1),
        "silu": lambda x: x * _sigmoid(x),
        "swish": lambda x: x * _sigmoid(x),
        "gelu": lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2.0))),
        "mish": lambda x: x * np.tanh(_softplus(x)),
        "softmax": lambda x: (
            np.exp(x - x.max(-1, keepdims=True)) / np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)
        ),
        "log_softmax": lambda x: (
            x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))
        ),
        "tanh_shrink": lambda x: x - np.tanh(x),
        "hard_tanh": lambda x: np.clip(x, -1, 1),
        "soft_shrink": lambda x: np.where(x > 0.5, x - 0.5, np.where(x < -0.5, x + 0.5, 0.0)),
        "hard_shrink": lambda x: np.where(np.abs(x) > 0.5, x, 0.0),
        "log_sigmoid": lambda x: -_softplus(-x),
        "sparse_sigmoid": lambda x: np.clip(0.5 * x + 0.5, 0, 1),
        "squareplus": lambda x: (x + np.sqrt(x * x + 4.0)) / 2.0,
        "sparse_plus": lambda x: np.where(x <= -1, 0.0, np.where(x >= 1, x, (x + 1) ** 2 / 4)),
    }
    if name not in table:
        raise NoReference(f"activation {spec!r}")
    return table[name]
