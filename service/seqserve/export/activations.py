"""Keras activations as ONNX nodes, with Keras' own formulas (hard_sigmoid per Keras version)."""

from __future__ import annotations

import math
from typing import Any

from seqserve.export.builder import GraphBuilder
from seqserve.keras.activations import activation_name

__all__ = ["activation_name", "apply", "is_supported"]


def is_supported(name: str | None) -> bool:
    return name in _BUILDERS


def apply(b: GraphBuilder, name: str, x: str, keras_major: int = 3) -> str:
    """Nodes computing activation `name` on tensor `x`; returns the result's name."""
    fn = _BUILDERS[name]
    return fn(b, x, keras_major)


def _hard_sigmoid(b: GraphBuilder, x: str, keras_major: int) -> str:
    if keras_major >= 3:
        # Keras 3: relu6(x + 3) / 6
        return b.op("HardSigmoid", [x], "hard_sigmoid", alpha=1.0 / 6.0, beta=0.5)
    return b.op("HardSigmoid", [x], "hard_sigmoid", alpha=0.2, beta=0.5)


def _silu(b: GraphBuilder, x: str, _: int) -> str:
    return b.op("Mul", [x, b.op("Sigmoid", [x])], "silu")


def _gelu(b: GraphBuilder, x: str, _: int) -> str:
    erf = b.op("Erf", [b.op("Mul", [x, b.const(1.0 / math.sqrt(2.0))])])
    return b.op("Mul", [b.op("Mul", [x, b.const(0.5)]), b.op("Add", [erf, b.const(1.0)])], "gelu")


def _mish(b: GraphBuilder, x: str, _: int) -> str:
    return b.op("Mul", [x, b.op("Tanh", [b.op("Softplus", [x])])], "mish")


def _squareplus(b: GraphBuilder, x: str, _: int) -> str:
    root = b.op("Sqrt", [b.op("Add", [b.op("Mul", [x, x]), b.const(4.0)])])
    return b.op("Div", [b.op("Add", [x, root]), b.const(2.0)], "squareplus")


def _sparse_plus(b: GraphBuilder, x: str, _: int) -> str:
    one = b.const(1.0)
    quad = b.op("Div", [b.op("Pow", [b.op("Add", [x, one]), b.const(2.0)]), b.const(4.0)])
    upper = b.op("Where", [b.op("GreaterOrEqual", [x, one]), x, quad])
    return b.op("Where", [b.op("LessOrEqual", [x, b.const(-1.0)]), b.const(0.0), upper], "sparse_plus")


def _simple(op: str, **attrs: Any):  # noqa: ANN202
    return lambda b, x, _: b.op(op, [x], op.lower(), **attrs)


_BUILDERS = {
    "linear": lambda b, x, _: x,
    "tanh": _simple("Tanh"),
    "sigmoid": _simple("Sigmoid"),
    "relu": _simple("Relu"),
    "relu6": lambda b, x, _: b.op("Clip", [x, b.const(0.0), b.const(6.0)], "relu6"),
    "leaky_relu": _simple("LeakyRelu", alpha=0.2),
    "elu": _simple("Elu", alpha=1.0),
    "selu": _simple("Selu", alpha=1.6732632423543772, gamma=1.0507009873554805),
    "celu": _simple("Celu", alpha=1.0),
    "softplus": _simple("Softplus"),
    "softsign": _simple("Softsign"),
    "exponential": _simple("Exp"),
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": _simple("HardSwish"),
    "hard_swish": _simple("HardSwish"),
    "silu": _silu,
    "swish": _silu,
    "gelu": _gelu,
    "mish": _mish,
    "softmax": _simple("Softmax", axis=-1),
    "log_softmax": _simple("LogSoftmax", axis=-1),
    "tanh_shrink": lambda b, x, _: b.op("Sub", [x, b.op("Tanh", [x])], "tanh_shrink"),
    "hard_tanh": lambda b, x, _: b.op("Clip", [x, b.const(-1.0), b.const(1.0)], "hard_tanh"),
    "soft_shrink": _simple("Shrink", bias=0.5, lambd=0.5),
    "hard_shrink": _simple("Shrink", bias=0.0, lambd=0.5),
    "log_sigmoid": lambda b, x, _: b.op("Neg", [b.op("Softplus", [b.op("Neg", [x])])], "log_sigmoid"),
    "sparse_sigmoid": lambda b, x, _: b.op(
        "Clip", [b.op("Add", [b.op("Mul", [x, b.const(0.5)]), b.const(0.5)]), b.const(0.0), b.const(1.0)]
    ),
    "squareplus": _squareplus,
    "sparse_plus": _sparse_plus,
}
