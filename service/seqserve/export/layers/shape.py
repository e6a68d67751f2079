"""Shape and merge layers: Flatten, Reshape, RepeatVector, Concatenate, Add."""

from __future__ import annotations

from seqserve.export.context import CallValues, ConvertContext, Value
from seqserve.export.registry import register
from seqserve.keras.model import Layer


@register("Flatten")
def flatten(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    x = call.x
    y = ctx.b.op("Flatten", [x.name], layer.name, axis=1)
    size = 1
    for d in x.shape[1:]:
        size = None if d is None or size is None else size * int(d)
    return [Value(y, (x.shape[0], size), x.dtype)]


@register("Reshape")
def reshape(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    x = call.x
    target = [int(d) for d in layer.config["target_shape"]]
    y = ctx.b.op("Reshape", [x.name, ctx.b.i64([0, *target])], layer.name)
    shape = tuple(None if d == -1 else d for d in target)
    return [Value(y, (x.shape[0], *shape), x.dtype)]


@register("RepeatVector")
def repeat_vector(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    x = call.x
    n = int(layer.config["n"])
    if x.rank != 2:
        raise ctx.error(layer, f"RepeatVector expects a 2D input, got rank {x.rank}")
    b = ctx.b
    y = b.op("Tile", [b.op("Unsqueeze", [x.name, b.i64([1])]), b.i64([1, n, 1])], layer.name)
    return [Value(y, (x.shape[0], n, x.shape[1]), x.dtype)]


def _merged_mask(ctx: ConvertContext, inputs: list[Value]) -> str | None:
    """Keras' merge layers: OR of the masks when every input has one; otherwise no effective mask."""
    if not inputs or any(v.mask is None for v in inputs):
        return None
    mask = inputs[0].mask
    for v in inputs[1:]:
        mask = ctx.b.op("Or", [mask, v.mask], "merged_mask")
    return mask


@register("Concatenate")
def concatenate(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    xs = call.inputs
    rank = xs[0].rank
    axis = int(layer.config.get("axis", -1)) % rank
    y = ctx.b.op("Concat", [v.name for v in xs], layer.name, axis=axis)
    dims = [v.shape[axis] for v in xs]
    total = None if any(d is None for d in dims) else sum(int(d) for d in dims)
    shape = tuple(total if i == axis else d for i, d in enumerate(xs[0].shape))
    mask = _merged_mask(ctx, xs) if axis == rank - 1 else None
    return [Value(y, shape, xs[0].dtype, mask)]


@register("Add")
def add(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    xs = call.inputs
    y = xs[0].name
    for v in xs[1:]:
        y = ctx.b.op("Add", [y, v.name], layer.name)
    return [Value(y, xs[0].shape, xs[0].dtype, _merged_mask(ctx, xs))]
