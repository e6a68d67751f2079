"""Keras 3 op layers: functional configs record mask computations as ops (`NotEqual`, `Any`,
`ExpandDims`, `LogicalOr`, `ZerosLike`, `Concatenate`...). Registered as "ops.<class>"."""

from __future__ import annotations

from typing import Any

from onnx import helper

from seqserve.export.builder import BOOL, INT64
from seqserve.export.context import CallValues, ConvertContext, Value
from seqserve.export.convert_dtypes import ONNX_DTYPES
from seqserve.export.registry import register
from seqserve.keras.model import Layer


def _np(elem: int) -> Any:
    return helper.tensor_dtype_to_np_dtype(elem)


def _operands(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[str]:
    """Positional operands: graph tensors for `__keras_tensor__` args, constants for scalars."""
    tensors = iter(call.inputs)
    names = []
    for arg in call.args:
        if isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__":
            names.append(next(tensors).name)
        elif isinstance(arg, (int, float, bool)):
            names.append(ctx.b.const(arg, "scalar", _np(call.inputs[0].dtype)))
        else:
            raise ctx.error(layer, f"unsupported argument {str(arg)[:40]!r}")
    return names


def _broadcast_shape(a: tuple, b: tuple) -> tuple:
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    return tuple(y if x == 1 else x for x, y in zip(a, b, strict=True))


def _binary(op: str, negate: bool = False, out_bool: bool = True):  # noqa: ANN202
    def convert(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
        a, b = _operands(ctx, layer, call)
        y = ctx.b.op(op, [a, b], layer.name)
        if negate:
            y = ctx.b.op("Not", [y], layer.name)
        shapes = [v.shape for v in call.inputs]
        shape = shapes[0] if len(shapes) == 1 else _broadcast_shape(shapes[0], shapes[1])
        return [Value(y, shape, BOOL if out_bool else call.x.dtype)]

    return convert


register("ops.NotEqual")(_binary("Equal", negate=True))
register("ops.Equal")(_binary("Equal"))
register("ops.Greater")(_binary("Greater"))
register("ops.Less")(_binary("Less"))
register("ops.LogicalOr")(_binary("Or"))
register("ops.LogicalAnd")(_binary("And"))


@register("ops.LogicalNot")
def logical_not(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    return [Value(ctx.b.op("Not", [call.x.name], layer.name), call.x.shape, BOOL)]


def _reduce(op: str):  # noqa: ANN202
    def convert(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
        x = call.x
        axis = layer.config.get("axis")
        keep = bool(layer.config.get("keepdims", False))
        axes = list(range(x.rank)) if axis is None else ([axis] if isinstance(axis, int) else list(axis))
        axes = [a % x.rank for a in axes]
        b = ctx.b
        as_int = b.op("Cast", [x.name], to=INT64)
        y = b.op(op, [as_int], axes=axes, keepdims=int(keep))
        y = b.op("Cast", [y], layer.name, to=BOOL)
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape) if keep or i not in axes)
        return [Value(y, shape, BOOL)]

    return convert


register("ops.Any")(_reduce("ReduceMax"))
register("ops.All")(_reduce("ReduceMin"))


@register("ops.ExpandDims")
def expand_dims(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    x = call.x
    axis = int(layer.config.get("axis", -1))
    pos = axis % (x.rank + 1)
    y = ctx.b.op("Unsqueeze", [x.name, ctx.b.i64([pos])], layer.name)
    shape = list(x.shape)
    shape.insert(pos, 1)
    return [Value(y, tuple(shape), x.dtype)]


@register("ops.Squeeze")
def squeeze(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    x = call.x
    axis = layer.config.get("axis")
    if axis is None:
        raise ctx.error(layer, "squeeze without an axis is not supported")
    axes = [a % x.rank for a in ([axis] if isinstance(axis, int) else axis)]
    y = ctx.b.op("Squeeze", [x.name, ctx.b.i64(axes)], layer.name)
    return [Value(y, tuple(d for i, d in enumerate(x.shape) if i not in axes), x.dtype)]


def _filled(value: float):  # noqa: ANN202
    def convert(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
        x = call.x
        dtype = _dtype(ctx, layer, layer.config.get("dtype"), x.dtype)
        b = ctx.b
        y = b.op(
            "ConstantOfShape",
            [b.op("Shape", [x.name])],
            layer.name,
            value=helper.make_tensor("v", dtype, [1], [_np(dtype).type(value)]),
        )
        return [Value(y, x.shape, dtype)]

    return convert


register("ops.ZerosLike")(_filled(0))
register("ops.OnesLike")(_filled(1))


@register("ops.Concatenate")
def concatenate_op(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    xs = call.inputs
    axis = int(layer.config.get("axis", 0)) % xs[0].rank
    y = ctx.b.op("Concat", [v.name for v in xs], layer.name, axis=axis)
    dims = [v.shape[axis] for v in xs]
    total = None if any(d is None for d in dims) else sum(int(d) for d in dims)
    return [Value(y, tuple(total if i == axis else d for i, d in enumerate(xs[0].shape)), xs[0].dtype)]


def _dtype(ctx: ConvertContext, layer: Layer, spec: Any, default: int) -> int:
    if spec is None:
        return default
    name = str(spec.get("config", {}).get("name", "float32")) if isinstance(spec, dict) else str(spec)
    to = ONNX_DTYPES.get(name)
    if to is None:
        raise ctx.error(layer, f"unsupported dtype {name!r}")
    return to


@register("ops.Cast")
def cast(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    to = _dtype(ctx, layer, layer.config.get("dtype"), call.x.dtype)
    return [Value(ctx.b.op("Cast", [call.x.name], layer.name, to=to), call.x.shape, to, call.x.mask)]
