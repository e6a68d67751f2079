"""Keras convolution and pooling layers (Conv1D/2D/3D, Max/AveragePooling1D/2D/3D, Global
Max/AveragePooling1D/2D/3D) as ONNX `Conv`, `MaxPool`, `AveragePool` and reductions, plus the
convolution geometry ConvLSTM shares.

ONNX convolutions are channels-first; a channels_last Keras layer is wrapped in two Transposes
(one each side, nothing else). Between two such layers the inverse pair cancels in ONNX Runtime's
transpose optimizer (basic level, before EP partitioning; checked: Conv-Transpose-Relu-Transpose-
Conv runs as Conv-Relu-Conv). Eliding the pair here instead would leave the first Transpose dead in
the graph, and ORT runs dead nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqserve.export import activations
from seqserve.export.builder import FLOAT, GraphBuilder
from seqserve.export.context import CallValues, ConvertContext, Value
from seqserve.export.registry import register
from seqserve.keras.model import Layer

# ---------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel, strides, dilations and Keras padding of an N-D convolution or pooling window."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    padding: str  # "valid" | "same" | "causal"
    # Keras on Theano (a file whose backend is "theano"): "same" pads span // 2 in front and cuts
    # the surplus from the end, so an even window's odd pixel goes at the START, not TF's end.
    leading_odd_pad: bool = False

    @property
    def rank(self) -> int:
        return len(self.kernel)

    def _span(self, i: int) -> int:
        return (self.kernel[i] - 1) * self.dilations[i] + 1

    def pads(self, spatial: Sequence[int | None]) -> list[int] | None:
        """ONNX `pads` (all begins, then all ends) for Keras' padding; None when they depend on an
        unknown input size (then `auto_pad="SAME_UPPER"` computes the same thing)."""
        begins, ends = [], []
        for i, size in enumerate(spatial):
            span = self._span(i)
            if self.padding == "valid":
                total, begin = 0, 0
            elif self.padding == "causal":
                total, begin = span - 1, span - 1
            elif self.strides[i] == 1:
                total = span - 1
                begin = span // 2 if self.leading_odd_pad else total // 2
            elif size is None:
                return None
            elif self.leading_odd_pad:
                out = -(-size // self.strides[i])
                begin = span // 2
                total = begin + max(0, (out - 1) * self.strides[i] + span - size - begin)
            else:  # TF's SAME, which every Keras backend but Theano reproduces: the odd pixel goes at the end
                out = -(-size // self.strides[i])
                total = max(0, (out - 1) * self.strides[i] + span - size)
                begin = total // 2
            begins.append(begin)
            ends.append(total - begin)
        return begins + ends

    def out_spatial(self, spatial: Sequence[int | None]) -> tuple[int | None, ...]:
        out: list[int | None] = []
        for i, size in enumerate(spatial):
            if size is None:
                out.append(None)
            elif self.padding == "valid":
                out.append((size - self._span(i)) // self.strides[i] + 1)
            else:
                out.append(-(-size // self.strides[i]))
        return tuple(out)

    def attrs(self, spatial: Sequence[int | None], with_dilations: bool = True) -> dict[str, Any]:
        """Attributes of an ONNX Conv/MaxPool/AveragePool node with this geometry."""
        attrs: dict[str, Any] = {"kernel_shape": list(self.kernel), "strides": list(self.strides)}
        if with_dilations:
            attrs["dilations"] = list(self.dilations)
        pads = self.pads(spatial)
        if pads is None:
            attrs["auto_pad"] = "SAME_UPPER"
        else:
            attrs["pads"] = pads
        return attrs


def int_tuple(value: Any, rank: int, what: str = "value") -> tuple[int, ...]:
    """Keras' standardize_tuple: an int or a list of `rank` ints."""
    if isinstance(value, int | float):
        return (int(value),) * rank
    values = tuple(int(v) for v in value)
    if len(values) == 1 and rank > 1:
        values = values * rank
    if len(values) != rank:
        raise ValueError(f"{what} {value!r} does not have {rank} entries")
    return values


def geometry_from_config(ctx: ConvertContext, layer: Layer, cfg: dict[str, Any], rank: int) -> ConvGeometry:
    try:
        kernel = int_tuple(cfg["kernel_size"], rank, "kernel_size")
        strides = int_tuple(cfg.get("strides", 1), rank, "strides")
        dilations = int_tuple(cfg.get("dilation_rate", 1), rank, "dilation_rate")
    except (KeyError, TypeError, ValueError) as e:
        raise ctx.error(layer, f"bad convolution config: {e}") from None
    padding = str(cfg.get("padding", "valid")).lower()
    if padding not in ("valid", "same", "causal"):
        raise ctx.error(layer, f"unsupported padding {padding!r}")
    if padding == "causal" and rank != 1:
        raise ctx.error(layer, "causal padding exists only for 1D convolutions")
    return ConvGeometry(kernel, strides, dilations, padding, leading_odd_pad=ctx.model.backend == "theano")


def channels_first(ctx: ConvertContext, layer: Layer, cfg: dict[str, Any]) -> bool:
    fmt = cfg.get("data_format") or "channels_last"
    if fmt not in ("channels_last", "channels_first"):
        raise ctx.error(layer, f"unsupported data_format {fmt!r}")
    return fmt == "channels_first"


def onnx_kernel(kernel: np.ndarray) -> np.ndarray:
    """Keras kernel (*window, in, out) -> ONNX Conv weight (out, in, *window)."""
    rank = kernel.ndim - 2
    return np.ascontiguousarray(kernel.transpose(rank + 1, rank, *range(rank)))


def activation_of(ctx: ConvertContext, layer: Layer, cfg: dict[str, Any], key: str, default: str) -> str:
    name = activations.activation_name(cfg.get(key, default))
    if name is None or not activations.is_supported(name):
        raise ctx.error(layer, f"unsupported {key} {cfg.get(key)!r}")
    return name


# ------------------------------------------------------------------------ layout transposes


def to_channels_first(b: GraphBuilder, x: str, rank: int, base: str) -> str:
    """[N, *spatial, C] -> [N, C, *spatial]."""
    return b.op("Transpose", [x], base, perm=[0, rank + 1, *range(1, rank + 1)])


def to_channels_last(b: GraphBuilder, x: str, rank: int, base: str) -> str:
    """[N, C, *spatial] -> [N, *spatial, C]."""
    return b.op("Transpose", [x], base, perm=[0, *range(2, rank + 2), 1])


# ---------------------------------------------------------------------------- convolutions


def _spatial_and_channels(
    ctx: ConvertContext, layer: Layer, x: Value, rank: int, cf: bool
) -> tuple[tuple[int | None, ...], int]:
    if x.rank != rank + 2:
        raise ctx.error(layer, f"expects a {rank + 2}D input, got shape {x.shape}")
    spatial = x.shape[2:] if cf else x.shape[1:-1]
    chans = x.shape[1] if cf else x.shape[-1]
    if chans is None:
        raise ctx.error(layer, "the channel dimension of the input must be known")
    return tuple(spatial), int(chans)


def _conv(ctx: ConvertContext, layer: Layer, call: CallValues, rank: int) -> list[Value]:
    cfg = layer.config
    x = call.x
    cf = channels_first(ctx, layer, cfg)
    geo = geometry_from_config(ctx, layer, cfg, rank)
    spatial, chans = _spatial_and_channels(ctx, layer, x, rank, cf)
    if not isinstance(cfg.get("filters"), int):
        raise ctx.error(layer, f"config has no integer 'filters' (got {cfg.get('filters')!r})")
    filters = int(cfg["filters"])
    groups = int(cfg.get("groups", 1) or 1)
    if chans % groups or filters % groups:
        raise ctx.error(layer, f"groups={groups} does not divide {chans} input channels and {filters} filters")
    use_bias = bool(cfg.get("use_bias", True))
    shapes = [(*geo.kernel, chans // groups, filters)] + ([(filters,)] if use_bias else [])
    w = ctx.weights(layer, shapes, ["kernel", "bias"][: len(shapes)])
    act = activation_of(ctx, layer, cfg, "activation", "linear")
    if geo.leading_odd_pad and geo.pads(spatial) is None:  # auto_pad has no Theano form
        raise ctx.error(layer, "a strided 'same' convolution saved on Theano needs known spatial sizes")

    b = ctx.b
    xin = x.name if cf else to_channels_first(b, x.name, rank, f"{layer.name}_nchw")
    inputs = [xin, b.const(onnx_kernel(w[0]), f"{layer.name}_kernel")]
    if use_bias:
        inputs.append(b.const(w[1], f"{layer.name}_bias"))
    y = b.op("Conv", inputs, layer.name, group=groups, **geo.attrs(spatial))
    if not cf:
        y = to_channels_last(b, y, rank, layer.name)
    # Activations that reduce over an axis (softmax) see Keras' layout: apply them last.
    y = activations.apply(b, act, y, ctx.keras_major)
    out = geo.out_spatial(spatial)
    shape = (x.shape[0], filters, *out) if cf else (x.shape[0], *out, filters)
    return [Value(y, shape, FLOAT)]


@register("Conv1D")
def conv1d(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    return _conv(ctx, layer, call, 1)


@register("Conv2D")
def conv2d(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    return _conv(ctx, layer, call, 2)


@register("Conv3D")
def conv3d(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    return _conv(ctx, layer, call, 3)


# ---------------------------------------------------------------------------------- pooling


def _pool(ctx: ConvertContext, layer: Layer, call: CallValues, rank: int, op: str) -> list[Value]:
    cfg = layer.config
    x = call.x
    cf = channels_first(ctx, layer, cfg)
    try:
        window = int_tuple(cfg.get("pool_size", 2), rank, "pool_size")
        strides = window if cfg.get("strides") is None else int_tuple(cfg["strides"], rank, "strides")
    except (TypeError, ValueError) as e:
        raise ctx.error(layer, f"bad pooling config: {e}") from None
    padding = str(cfg.get("padding", "valid")).lower()
    if padding not in ("valid", "same"):
        raise ctx.error(layer, f"unsupported padding {padding!r}")
    geo = ConvGeometry(window, strides, (1,) * rank, padding)
    spatial, chans = _spatial_and_channels(ctx, layer, x, rank, cf)
    b = ctx.b
    xin = x.name if cf else to_channels_first(b, x.name, rank, f"{layer.name}_nchw")
    attrs = geo.attrs(spatial, with_dilations=False)
    if op == "AveragePool":
        attrs["count_include_pad"] = 0  # Keras averages over the window's valid part only
        pads = geo.pads(spatial)
        asymmetric = pads is None or pads[:rank] != pads[rank:]
        if padding == "same" and asymmetric and ctx.model.backend == "torch":
            # Keras' torch backend pads an uneven "same" window by repeating the edge values and
            # averages over them (keras/src/backend/torch/nn.py); TF and JAX, and Keras' docs, leave
            # them out. Only an .h5 file names its backend; a .keras file gets the documented form.
            if pads is None:
                raise ctx.error(
                    layer,
                    "average pooling with padding 'same' needs known spatial sizes "
                    "for a model saved by Keras' torch backend",
                )
            xin = b.op("Pad", [xin, b.i64([0, 0, *pads[:rank], 0, 0, *pads[rank:]])], f"{layer.name}_edge", mode="edge")
            attrs["pads"] = [0] * (2 * rank)
    y = b.op(op, [xin], layer.name, **attrs)
    if not cf:
        y = to_channels_last(b, y, rank, layer.name)
    out = geo.out_spatial(spatial)
    shape = (x.shape[0], chans, *out) if cf else (x.shape[0], *out, chans)
    return [Value(y, shape, x.dtype)]


def _register_pooling() -> None:
    for rank in (1, 2, 3):
        for keras_name, op in (("MaxPooling", "MaxPool"), ("AveragePooling", "AveragePool")):

            def convert(
                ctx: ConvertContext, layer: Layer, call: CallValues, rank: int = rank, op: str = op
            ) -> list[Value]:
                return _pool(ctx, layer, call, rank, op)

            register(f"{keras_name}{rank}D")(convert)


_register_pooling()


def _global_pool(ctx: ConvertContext, layer: Layer, call: CallValues, rank: int, reduce: str) -> list[Value]:
    cfg = layer.config
    x = call.x
    cf = channels_first(ctx, layer, cfg)
    if x.rank != rank + 2:
        raise ctx.error(layer, f"expects a {rank + 2}D input, got shape {x.shape}")
    keepdims = bool(cfg.get("keepdims", False))
    axes = list(range(2, rank + 2)) if cf else list(range(1, rank + 1))
    b = ctx.b
    if reduce == "ReduceMean" and x.mask is not None and rank == 1:
        # Keras averages over the unmasked steps only (GlobalAveragePooling1D is mask-aware).
        m = b.op("Unsqueeze", [x.mask, b.i64([1 if cf else 2])], f"{layer.name}_mask")
        kept = b.op("Where", [m, x.name, b.const(0.0, "zero")], f"{layer.name}_masked")
        total = b.op("ReduceSum", [kept, b.i64(axes)], f"{layer.name}_sum", keepdims=int(keepdims))
        count = b.op(
            "ReduceSum", [b.op("Cast", [m], to=FLOAT), b.i64(axes)], f"{layer.name}_count", keepdims=int(keepdims)
        )
        y = b.op("Div", [total, count], layer.name)
    else:
        y = b.op(reduce, [x.name], layer.name, axes=axes, keepdims=int(keepdims))
    if keepdims:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return [Value(y, shape, x.dtype)]


def _register_global_pooling() -> None:
    for rank in (1, 2, 3):
        for keras_name, reduce in (("GlobalAveragePooling", "ReduceMean"), ("GlobalMaxPooling", "ReduceMax")):

            def convert(
                ctx: ConvertContext, layer: Layer, call: CallValues, rank: int = rank, reduce: str = reduce
            ) -> list[Value]:
                return _global_pool(ctx, layer, call, rank, reduce)

            register(f"{keras_name}{rank}D")(convert)


_register_global_pooling()
