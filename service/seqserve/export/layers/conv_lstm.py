"""ConvLSTM1D/2D/3D as a model-local ONNX function in seqserve's domain: ONNX has no ConvLSTM op,
and a function of standard ops (Conv, Add, Mul, Sigmoid/Tanh/HardSigmoid..., Split, Transpose,
Reshape, Scan) runs on any ONNX Runtime, its CUDA EP included, with no custom-op library.

The cell is Keras' (keras/src/layers/rnn/conv_lstm.py): the input-to-gates convolution uses the
layer's padding, strides and dilation; the recurrent convolution always uses padding "same",
stride 1 and no dilation; gates i, f, c, o; c' = f*c + i*act(xc + hc), h' = o*act(c').

Graph form, chosen by measurement (FORM). Each form is a Scan over time in a function; they
differ in where the input-to-gates Conv runs. ONNX Runtime 1.32 CPU EP on the 2-core dev box
(shared, loaded), batch 4, T=10, 32x32x8 -> 16 filters, 3x3, channels_last, 1000 interleaved
runs per form, 10th percentile (min) in ms:
    form                                                  same, 2 thr   same, 1 thr   valid, 2 thr   valid, 1 thr
    inner:   body = input Conv + recurrent Conv + gates   9.77 (9.37)  16.28 (15.87)   8.95 (8.54)  14.70 (14.36)
    hoisted: input Conv of all T steps at once (time     11.13 (10.52)  17.44 (16.79)  10.00 (9.03)  15.86 (15.22)
             folded into batch), body = recurrent Conv
             + gates
    merged:  body = one Conv over concat(x_t, h)          9.91 (9.41)  16.10 (15.71)        -              -
             (padding same, stride 1, dilation 1 only)
(tf2onnx's Loop: 18.6 ms in DESIGN.md's table, same box, default threads.) Hoisting saves no
convolution work, and ORT profiles show why it loses: in the inner form ORT's NCHWc transformer
fuses both Convs and the Add into one FusedConv-with-sum per step, while the hoisted form pays a
reorder of the whole [T*N, 4F, rows, cols] gate tensor out of NCHWc (~2 ms) and an unfused Add per
step (~1.4 ms in all). Merging is a wash and covers fewer configurations. So: inner, on every
target; every node is a CUDA EP op (gpu/NOTES.md measured this very body on CUDA: all nodes
placed on the GPU). The other forms stay exact (tested) for a re-measurement, e.g. on a GPU, where
hoisting removes one kernel launch per step.

The function's inputs and outputs are in Keras' layout (channels_last or channels_first as the
layer has it); inside, everything is time-major channels-first, as ONNX Conv and Scan want it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from seqserve.export import activations
from seqserve.export.builder import FLOAT, LOCAL_DOMAIN, OPSET, GraphBuilder, NameScope
from seqserve.export.context import CallValues, ConvertContext, Value
from seqserve.export.layers.conv import ConvGeometry, activation_of, channels_first, geometry_from_config, onnx_kernel
from seqserve.export.registry import register
from seqserve.keras.model import Layer

FORM = "inner"
FORMS = ("inner", "hoisted", "merged")
# Activations that reduce over an axis would see the wrong axis inside the channels-first cell.
_NOT_ELEMENTWISE = {"softmax", "log_softmax"}


@dataclass(frozen=True)
class ConvLSTMSpec:
    """Everything the cell function depends on besides the weights."""

    filters: int
    channels: int
    spatial: tuple[int, ...]  # input spatial size, static (Keras requires it)
    geometry: ConvGeometry
    channels_first: bool
    activation: str
    recurrent_activation: str
    use_bias: bool
    go_backwards: bool
    return_sequences: bool
    keras_major: int

    @property
    def rank(self) -> int:
        return self.geometry.rank

    @property
    def out_spatial(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.geometry.out_spatial(self.spatial))  # type: ignore[arg-type]

    @property
    def state_shape(self) -> list[int]:
        """One state without the batch dimension, in Keras' layout."""
        so = list(self.out_spatial)
        return [self.filters, *so] if self.channels_first else [*so, self.filters]

    def recurrent_geometry(self) -> ConvGeometry:
        k = self.geometry.kernel
        return ConvGeometry(k, (1,) * len(k), (1,) * len(k), "same", self.geometry.leading_odd_pad)

    def can_merge(self) -> bool:
        g = self.geometry
        return g.padding == "same" and set(g.strides) == {1} and set(g.dilations) == {1}


def gate_order(m: np.ndarray, filters: int) -> np.ndarray:
    """Output-channel blocks (axis 0) Keras i, f, c, o -> i, f, o, c: one activation call then
    covers the three sigmoid-like gates."""
    i, f, c, o = (m[k * filters : (k + 1) * filters] for k in range(4))
    return np.ascontiguousarray(np.concatenate([i, f, o, c], axis=0))


def build_function(spec: ConvLSTMSpec, name: str, form: str = FORM) -> onnx.FunctionProto:
    """The cell function: inputs X, W, R[, B], H0, C0; outputs [Y,] H, C (Y only with
    return_sequences; otherwise the output is H). W, R are ONNX Conv weights [4F, C|F, *k] and B
    is [4F], all with gate blocks in the order i, f, o, c (see gate_order)."""
    if form == "merged" and not spec.can_merge():
        raise ValueError("the merged form needs padding same, stride 1 and dilation 1")
    r, nf = spec.rank, spec.filters
    fb = GraphBuilder(NameScope(), is_main=False)
    ins = ["X", "W", "R", *(["B"] if spec.use_bias else []), "H0", "C0"]
    for n in ins:
        fb.scope.reserve(n)
    outs = [*(["Y"] if spec.return_sequences else []), "H", "C"]
    for n in outs:
        fb.scope.reserve(n)

    # Keras layout -> time-major channels-first [T, N, C, *spatial]; states -> [N, F, *spatial].
    if spec.channels_first:
        xt = fb.op("Transpose", ["X"], "x_time_major", perm=[1, 0, *range(2, r + 3)])
        h0, c0 = "H0", "C0"
    else:
        xt = fb.op("Transpose", ["X"], "x_time_major", perm=[1, 0, r + 2, *range(2, r + 2)])
        to_cf = [0, r + 1, *range(1, r + 1)]
        h0 = fb.op("Transpose", ["H0"], "h0", perm=to_cf)
        c0 = fb.op("Transpose", ["C0"], "c0", perm=to_cf)
    conv_in = ["W", *(["B"] if spec.use_bias else [])]
    in_attrs = spec.geometry.attrs(spec.spatial)
    rec_attrs = spec.recurrent_geometry().attrs(spec.out_spatial)

    if form == "hoisted":
        flat = fb.op("Reshape", [xt, fb.i64([-1, spec.channels, *spec.spatial])], "x_folded")
        xg = fb.op("Conv", [flat, *conv_in], "x_gates_folded", **in_attrs)
        tn = fb.op("Shape", [xt], "time_batch", start=0, end=2)
        shape = fb.op("Concat", [tn, fb.i64([4 * nf, *spec.out_spatial])], "x_gates_shape", axis=0)
        scan_in = fb.op("Reshape", [xg, shape], "x_gates")
    else:
        scan_in = xt
    weights = fb.op("Concat", ["W", "R"], "wr", axis=1) if form == "merged" else None

    sb = fb.sub()
    h, c, x_t = sb.name("h"), sb.name("c"), sb.name("x_t")
    state_dims = [None, nf, *spec.out_spatial]
    sb.add_input(h, FLOAT, state_dims)
    sb.add_input(c, FLOAT, state_dims)
    x_dims = [4 * nf, *spec.out_spatial] if form == "hoisted" else [spec.channels, *spec.spatial]
    sb.add_input(x_t, FLOAT, [None, *x_dims])
    if form == "hoisted":
        z = sb.op("Add", [x_t, sb.op("Conv", [h, "R"], "h_gates", **rec_attrs)], "gates")
    elif form == "inner":
        xg_t = sb.op("Conv", [x_t, *conv_in], "x_gates", **in_attrs)
        z = sb.op("Add", [xg_t, sb.op("Conv", [h, "R"], "h_gates", **rec_attrs)], "gates")
    else:
        xh = sb.op("Concat", [x_t, h], "xh", axis=1)
        z = sb.op("Conv", [xh, weights, *conv_in[1:]], "gates", **in_attrs)
    ifo, g = sb.op("Split", [z, sb.i64([3 * nf, nf])], "gates_split", n_out=2, axis=1)
    ifo = activations.apply(sb, spec.recurrent_activation, ifo, spec.keras_major)
    i, f, o = sb.op("Split", [ifo], "ifo", n_out=3, axis=1)
    g = activations.apply(sb, spec.activation, g, spec.keras_major)
    body_outs = [sb.name("h_next"), sb.name("c_next")]
    h_next, c_next = body_outs
    sb.op_into("Add", [sb.op("Mul", [f, c], "fc"), sb.op("Mul", [i, g], "ig")], [c_next])
    sb.op_into("Mul", [o, activations.apply(sb, spec.activation, c_next, spec.keras_major)], [h_next])
    if spec.return_sequences:
        body_outs.append(sb.name("y_t"))
        sb.op_into("Identity", [h_next], [body_outs[2]])
    for n in body_outs:
        sb.add_output(n, FLOAT, state_dims)
    scan_outs = fb.op(
        "Scan",
        [h0, c0, scan_in],
        "scan",
        n_out=len(body_outs),
        body=sb.graph("conv_lstm_step"),
        num_scan_inputs=1,
        scan_input_directions=[int(spec.go_backwards)],
    )
    h_t, c_t = scan_outs[0], scan_outs[1]

    # Back to Keras' layout.
    if spec.return_sequences:
        perm = [1, 0, *range(2, r + 3)] if spec.channels_first else [1, 0, *range(3, r + 3), 2]
        fb.op_into("Transpose", [scan_outs[2]], ["Y"], perm=perm)
    if spec.channels_first:
        fb.op_into("Identity", [h_t], ["H"])
        fb.op_into("Identity", [c_t], ["C"])
    else:
        to_cl = [0, *range(2, r + 2), 1]
        fb.op_into("Transpose", [h_t], ["H"], perm=to_cl)
        fb.op_into("Transpose", [c_t], ["C"], perm=to_cl)
    return helper.make_function(
        LOCAL_DOMAIN,
        name,
        ins,
        outs,
        fb.nodes,
        [helper.make_opsetid("", OPSET)],
        doc_string=f"ConvLSTM{r}D cell over time ({form} form, gate blocks i, f, o, c)",
    )


def _function_name(class_name: str, layer: str) -> str:
    return f"{class_name}_{re.sub(r'[^0-9A-Za-z_]', '_', layer)}"


def _spec(ctx: ConvertContext, layer: Layer, x: Value, rank: int) -> ConvLSTMSpec:
    cfg = layer.config
    cf = channels_first(ctx, layer, cfg)
    if x.rank != rank + 3:
        raise ctx.error(layer, f"expects a {rank + 3}D input [batch, time, ...], got shape {x.shape}")
    spatial = x.shape[3:] if cf else x.shape[2:-1]
    chans = x.shape[2] if cf else x.shape[-1]
    if chans is None or any(d is None for d in spatial):
        raise ctx.error(layer, f"needs known spatial and channel dimensions, got shape {x.shape}")
    geo = geometry_from_config(ctx, layer, cfg, rank)
    if geo.padding == "causal":
        raise ctx.error(layer, "causal padding is not a ConvLSTM option")
    act = activation_of(ctx, layer, cfg, "activation", "tanh")
    rec = activation_of(ctx, layer, cfg, "recurrent_activation", "sigmoid" if ctx.keras_major >= 3 else "hard_sigmoid")
    for which in (act, rec):
        if which in _NOT_ELEMENTWISE:
            raise ctx.error(layer, f"activation {which!r} is not supported in a ConvLSTM cell")
    if not isinstance(cfg.get("filters"), int):
        raise ctx.error(layer, f"config has no integer 'filters' (got {cfg.get('filters')!r})")
    spec = ConvLSTMSpec(
        filters=int(cfg["filters"]),
        channels=int(chans),
        spatial=tuple(int(d) for d in spatial),  # type: ignore[arg-type]
        geometry=geo,
        channels_first=cf,
        activation=act,
        recurrent_activation=rec,
        use_bias=bool(cfg.get("use_bias", True)),
        go_backwards=bool(cfg.get("go_backwards", False)),
        return_sequences=bool(cfg.get("return_sequences", False)),
        keras_major=ctx.keras_major,
    )
    if any(d <= 0 for d in spec.out_spatial):
        raise ctx.error(layer, f"the convolution leaves no output for input shape {x.shape}")
    return spec


def _conv_lstm(ctx: ConvertContext, layer: Layer, call: CallValues, rank: int) -> list[Value]:
    x = call.x
    if x.mask is not None:
        raise ctx.error(layer, "masked inputs to ConvLSTM layers are not supported")
    spec = _spec(ctx, layer, x, rank)
    nf, k = spec.filters, spec.geometry.kernel
    shapes = [(*k, spec.channels, 4 * nf), (*k, nf, 4 * nf)] + ([(4 * nf,)] if spec.use_bias else [])
    w = ctx.weights(layer, shapes, ["kernel", "recurrent_kernel", "bias"][: len(shapes)])
    b = ctx.b
    ins = [
        x.name,
        b.const(gate_order(onnx_kernel(w[0]), nf), f"{layer.name}_kernel"),
        b.const(gate_order(onnx_kernel(w[1]), nf), f"{layer.name}_recurrent_kernel"),
    ]
    if spec.use_bias:
        ins.append(b.const(gate_order(w[2], nf), f"{layer.name}_bias"))

    # Same contract as the other recurrent layers: the states are always graph inputs/outputs;
    # a Keras call with initial_state feeds those tensors instead.
    states = [ctx.state_input(layer.name, kind, spec.state_shape) for kind in ("h", "c")]
    if call.initial_state:
        if len(call.initial_state) != 2:
            raise ctx.error(layer, f"called with {len(call.initial_state)} initial states, it has 2 (h, c)")
        states = [v.name for v in call.initial_state]
    if bool(layer.config.get("stateful", False)):
        ctx.stateful_layers.append(layer.name)

    fn = build_function(spec, _function_name(layer.class_name, layer.name), FORM)
    b.add_function(fn)
    outs = b.op(fn.name, [*ins, *states], layer.name, n_out=len(fn.output), domain=LOCAL_DOMAIN)
    h_final, c_final = outs[-2], outs[-1]
    ctx.state_output(layer.name, "h", h_final)
    ctx.state_output(layer.name, "c", c_final)

    state_shape = (x.shape[0], *spec.state_shape)
    if spec.return_sequences:
        output = Value(outs[0], (x.shape[0], x.shape[1], *spec.state_shape), FLOAT)
    else:
        output = Value(h_final, state_shape, FLOAT)
    if bool(layer.config.get("return_state", False)):
        return [output, Value(h_final, state_shape, FLOAT), Value(c_final, state_shape, FLOAT)]
    return [output]


@register("ConvLSTM1D")
def conv_lstm1d(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    return _conv_lstm(ctx, layer, call, 1)


@register("ConvLSTM2D")
def conv_lstm2d(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    return _conv_lstm(ctx, layer, call, 2)


@register("ConvLSTM3D")
def conv_lstm3d(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    return _conv_lstm(ctx, layer, call, 3)
