"""Recurrent layers as ONNX: a cell description shared by LSTM/GRU/SimpleRNN, the generic RNN,
StackedRNNCells and Bidirectional, and the two graph forms they are emitted in.

- fused: the ONNX `LSTM` / `GRU` op (fast and exact for default activations), always run forward
  over Keras' steps in Keras' order (go_backwards reverses the input in the `Gather` that makes
  it time-major; see `_fused`);
- scan: the input projection of all timesteps as one MatMul outside, then a `Scan` over time whose
  body is a few small ops. Exact for every activation and any mask (front/back padding, holes),
  and runs on ORT's CUDA EP where the fused op with other activations would fall back to the CPU;
- masked LSTM/GRU with default activations: an `If` on the data. A batch whose rows are each
  back-padded or front-padded (Keras' `pad_sequences` default), none empty, runs the fused op with
  `sequence_lens`, each row's valid steps moved first and the outputs moved back by two `Gather`s
  that also do the time-major transposes and fill the masked steps as Keras does; any other mask
  (holes, empty rows) runs the Scan form (`_padded_or_scan`).

SimpleRNN always takes the Scan form (the ONNX `RNN` op is slower, DESIGN.md); `--target cuda`
never emits a GRU with linear_before_reset=0 (ORT's CUDA EP runs it on the CPU).

Masking follows Keras 3 (`keras/src/backend/*/rnn.py`): at a masked step every state keeps its
value and the output is the previous output (zeros before the first valid step), or zeros when
`zero_output_for_mask` is set (Bidirectional sets it when returning sequences). Which calls are
masked at all follows the Keras generation that wrote the file (`CallValues.masked`): Keras 3 runs
a layer given `initial_state` unmasked, though its output still carries the input's mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from onnx import helper

from seqserve.export import activations
from seqserve.export.builder import BOOL, FLOAT, INT32, INT64, GraphBuilder
from seqserve.export.context import ConvertContext, Value
from seqserve.keras.model import Layer


@dataclass
class Cell:
    """One recurrent cell with Keras-layout weights (kernel columns in Keras' gate order)."""

    kind: str  # "lstm" | "gru" | "simple"
    units: int
    kernel: np.ndarray  # (input_dim, gates*units)
    recurrent_kernel: np.ndarray  # (units, gates*units)
    bias: np.ndarray | None  # lstm/simple/gru(reset_after=False): (gates*units,); gru reset_after: (2, 3*units)
    activation: str
    recurrent_activation: str
    reset_after: bool = True

    @property
    def state_kinds(self) -> list[str]:
        return ["h", "c"] if self.kind == "lstm" else ["h"]

    @property
    def gates(self) -> int:
        return {"lstm": 4, "gru": 3, "simple": 1}[self.kind]


@dataclass
class RecurrentOptions:
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    stateful: bool = False
    zero_output_for_mask: bool = False
    # Return the sequence in reversed time order (Bidirectional re-aligns its backward layer with
    # the input this way; the fused form folds it into the Gather it already does).
    reverse_output: bool = False


def check_time_major(ctx: ConvertContext, layer: Layer, cfg: dict[str, Any]) -> None:
    """Keras 2 layers may be time-major ([time, batch, features]); Keras models almost never are."""
    if cfg.get("time_major"):
        raise ctx.error(layer, "time_major=True recurrent layers are not supported")


def options_from_config(cfg: dict[str, Any]) -> RecurrentOptions:
    return RecurrentOptions(
        return_sequences=bool(cfg.get("return_sequences", False)),
        return_state=bool(cfg.get("return_state", False)),
        go_backwards=bool(cfg.get("go_backwards", False)),
        stateful=bool(cfg.get("stateful", False)),
        zero_output_for_mask=bool(cfg.get("zero_output_for_mask", False)),
    )


# --------------------------------------------------------------------------- cells from configs

CELL_KIND = {
    "LSTM": "lstm",
    "LSTMCell": "lstm",
    "CuDNNLSTM": "lstm",
    "LSTMV1": "lstm",
    "GRU": "gru",
    "GRUCell": "gru",
    "CuDNNGRU": "gru",
    "GRUV1": "gru",
    "SimpleRNN": "simple",
    "SimpleRNNCell": "simple",
}


def _activation(ctx: ConvertContext, layer: Layer, cfg: dict[str, Any], key: str, default: str) -> str:
    name = activations.activation_name(cfg.get(key, default))
    if name is None or not activations.is_supported(name):
        raise ctx.error(layer, f"unsupported {key} {cfg.get(key)!r}")
    return name


def cell_weight_count(class_name: str, cfg: dict[str, Any]) -> int:
    return 3 if cfg.get("use_bias", True) or class_name.startswith("CuDNN") else 2


def make_cell(
    ctx: ConvertContext,
    layer: Layer,
    class_name: str,
    cfg: dict[str, Any],
    weights: list[np.ndarray],
    input_dim: int,
) -> Cell:
    """A Cell from a layer/cell config and its weights (already split off for this cell)."""
    kind = CELL_KIND[class_name]
    units = int(cfg["units"])
    gates = {"lstm": 4, "gru": 3, "simple": 1}[kind]
    cudnn = class_name.startswith("CuDNN")
    use_bias = cudnn or bool(cfg.get("use_bias", True))
    reset_after = bool(cfg.get("reset_after", kind == "gru" and ctx.keras_major >= 3)) if kind == "gru" else False
    if cudnn:
        reset_after = kind == "gru"
    shapes: list[tuple[int, ...]] = [(input_dim, gates * units), (units, gates * units)]
    if use_bias:
        # CuDNN layers' weights were put in the LSTM/GRU(reset_after) layout by the reader.
        if kind == "gru" and reset_after:
            shapes.append((2, gates * units))
        else:
            shapes.append((gates * units,))
    names = ["kernel", "recurrent_kernel", "bias"][: len(shapes)]
    fake = Layer(layer.name, layer.class_name, cfg, weights)
    w = ctx.weights(fake, shapes, names)
    bias = w[2] if use_bias else None
    if cudnn:
        act, rec = "tanh", "sigmoid"
    else:
        act = _activation(ctx, layer, cfg, "activation", "tanh")
        rec = _activation(ctx, layer, cfg, "recurrent_activation", "sigmoid") if kind != "simple" else "linear"
    return Cell(kind, units, w[0], w[1], bias, act, rec, reset_after)


# ------------------------------------------------------------------------------- graph helpers


def batch_zeros(b: GraphBuilder, like: str, width: int) -> str:
    """Zeros of shape [batch, width], batch taken from dimension 0 of `like`."""
    batch = b.op("Shape", [like], "batch", start=0, end=1)
    shape = b.op("Concat", [batch, b.i64([width])], "zeros_shape", axis=0)
    return b.op(
        "ConstantOfShape",
        [shape],
        "zeros",
        value=helper.make_tensor("v", FLOAT, [1], [0.0]),
    )


def reverse_time(b: GraphBuilder, x: str, axis: int = 1) -> str:
    return b.op("Slice", [x, b.i64([-1]), b.i64([np.iinfo(np.int64).min]), b.i64([axis]), b.i64([-1])], "reversed")


# ---------------------------------------------------------------------------------- the forms


def can_fuse(ctx: ConvertContext, cells: list[Cell], mask: str | None) -> bool:
    if len(cells) != 1 or mask is not None:
        return False
    cell = cells[0]
    if cell.kind == "simple":  # the ONNX RNN op is slower than the Scan form (DESIGN.md)
        return False
    if cell.activation != "tanh" or cell.recurrent_activation != "sigmoid":
        return False
    # ORT's CUDA EP runs a GRU with linear_before_reset=0 on the CPU.
    return not (ctx.target == "cuda" and cell.kind == "gru" and not cell.reset_after)


def run_recurrent(
    ctx: ConvertContext,
    name: str,
    cells: list[Cell],
    x: Value,
    mask: str | None,
    initial_states: list[str],
    opts: RecurrentOptions,
) -> tuple[str, list[str]]:
    """Run `cells` (stacked) over x [batch, time, features]. Returns (output, final states flat)."""
    if can_fuse(ctx, cells, mask):
        return _fused(ctx.b, name, cells[0], x.name, initial_states, opts)
    if mask is not None and can_fuse(ctx, cells, None):
        return _padded_or_scan(ctx, name, cells, x.name, mask, initial_states, opts)
    return _scan_form(ctx, ctx.b, name, cells, x.name, mask, initial_states, opts)


def _scan_form(
    ctx: ConvertContext,
    b: GraphBuilder,
    name: str,
    cells: list[Cell],
    x: str,
    mask: str | None,
    initial: list[str],
    opts: RecurrentOptions,
) -> tuple[str, list[str]]:
    out, finals = _scan(ctx, b, name, cells, x, mask, initial, opts)
    if opts.return_sequences and opts.reverse_output:
        out = reverse_time(b, out)
    return out, finals


def _padded_or_scan(
    ctx: ConvertContext,
    name: str,
    cells: list[Cell],
    x: str,
    mask: str,
    initial: list[str],
    opts: RecurrentOptions,
) -> tuple[str, list[str]]:
    """A masked LSTM/GRU with default activations. When every row of the batch is padded at one
    end, back (valid steps first) or front (masked steps first, `pad_sequences`' default), rows
    of both kinds mixed, and no row is empty, the fused op runs (`_fused` with `sequence_lens`);
    otherwise (holes, empty rows) the Scan form. The test is on the data, inside the graph (`If`),
    a few small ops on the [batch, time] mask.

    Measured (2-core EPYC, ORT 1.32, CPU EP; batch 32, T=100, Embedding 64 -> 128 units,
    return_sequences, lengths 50..100; bench/export_vs_tf2onnx.py's models, graphs interleaved;
    median ms, 1 thread as thread CPU time / default threads as wall time; the form before this one
    / now / tf2onnx's Loop):
      LSTM front padding            Scan 11.75 / 8.03 / 11.61     default threads 10.76 / 8.10 / 11.65
      LSTM front, go_backwards      Scan 11.52 / 8.12 / 11.69     10.45 / 7.82 / 12.51
      LSTM front, last output only  Scan 11.41 / 7.96 / 11.74
      GRU front padding             Scan  8.96 / 7.29 /  9.31      8.59 / 7.19 /  8.72
      Bidirectional LSTM, front     Scan 24.17 / 16.70 / 24.61
      LSTM back padding             op + Transpose + Where 8.41 / 8.15 / 11.57;  9.15 / 8.09 / 16.30
    Default-thread figures on this shared 2-core machine are noisy (+-15%); 1-thread ones +-2%.
    """
    b = ctx.b
    lens = b.op(
        "ReduceSum", [b.op("Cast", [mask], f"{name}_mask_i64", to=INT64), b.i64([1])], f"{name}_lens", keepdims=0
    )
    steps = b.op("Squeeze", [b.op("Shape", [mask], f"{name}_steps", start=1, end=2), b.i64([0])])
    positions = b.op("Unsqueeze", [b.op("Range", [b.i64(0), steps, b.i64(1)], f"{name}_positions"), b.i64([0])])
    lens2 = b.op("Unsqueeze", [lens, b.i64([1])], f"{name}_lens2")

    def rows_like(pattern: str, label: str) -> str:
        """[batch] BOOL: the row's mask is `pattern`."""
        differs = b.op("Cast", [b.op("Xor", [pattern, mask])], to=INT64)
        return b.op("Equal", [b.op("ReduceMax", [differs], axes=[1], keepdims=0), b.i64(0)], f"{name}_{label}")

    back_rows = rows_like(b.op("Less", [positions, lens2]), "back_rows")
    front_rows = rows_like(b.op("Not", [b.op("Less", [positions, b.op("Sub", [steps, lens2])])]), "front_rows")
    odd_rows = b.op("Cast", [b.op("Not", [b.op("Or", [back_rows, front_rows])])], to=INT64)
    all_padded = b.op("Equal", [b.op("ReduceMax", [odd_rows], keepdims=0), b.i64(0)])
    none_empty = b.op("Greater", [b.op("ReduceMin", [lens], keepdims=0), b.i64(0)])
    cond = b.op("And", [all_padded, none_empty], f"{name}_padded")

    branches = []
    for form in ("fused", "scan"):
        sb = b.sub()
        if form == "fused":
            out, finals = _fused(sb, name, cells[0], x, initial, opts, lens=lens, front_rows=front_rows)
        else:
            out, finals = _scan_form(ctx, sb, name, cells, x, mask, initial, opts)
        for t in (out, *finals):
            o = sb.name(f"{name}_{form}_out")
            sb.op_into("Identity", [t], [o])
            sb.add_output(o, FLOAT, None)
        branches.append(sb.graph(f"{name}_{form}"))
    outs = b.op("If", [cond], f"{name}_if", n_out=1 + len(initial), then_branch=branches[0], else_branch=branches[1])
    return outs[0], outs[1:]


def _lstm_onnx_order(m: np.ndarray, units: int) -> np.ndarray:
    """Keras gate blocks i, f, c, o (last axis) -> ONNX i, o, f, c."""
    i, f, c, o = (m[..., k * units : (k + 1) * units] for k in range(4))
    return np.concatenate([i, o, f, c], axis=-1)


class _TimeIndex:
    """Row indices for the `Gather`s that move [batch, time] rows of a flattened tensor: a time
    shift of each row and the batch <-> time-major transpose in one copy. Built in the graph, on
    first use (batch size, time steps and lengths are known at run time only)."""

    def __init__(self, b: GraphBuilder, name: str, x: str) -> None:
        self.b, self.name, self.x = b, name, x
        self._dims: tuple[str, str] | None = None
        self._ranges: dict[tuple[str, int], str] = {}

    def dims(self) -> tuple[str, str]:
        """(batch, steps) as int64 scalars."""
        if self._dims is None:
            b = self.b
            shape = b.op("Shape", [self.x], f"{self.name}_shape")
            self._dims = (
                b.op("Gather", [shape, b.i64(0)], f"{self.name}_batch"),
                b.op("Gather", [shape, b.i64(1)], f"{self.name}_steps"),
            )
        return self._dims

    def rng(self, n: str, axis: int) -> str:
        """0..n-1 as a column ([n, 1], axis 0) or a row ([1, n], axis 1)."""
        if (n, axis) not in self._ranges:
            b = self.b
            r = b.op("Range", [b.i64(0), n, b.i64(1)], f"{self.name}_range")
            self._ranges[(n, axis)] = b.op("Unsqueeze", [r, b.i64([1 - axis])], f"{self.name}_range")
        return self._ranges[(n, axis)]

    def to_time_major(self, src_t: str) -> str:
        """[time, batch] indices into x as [batch*time, F]: row b*T + src_t[t, b]."""
        batch, steps = self.dims()
        return self.b.op("Add", [self.b.op("Mul", [self.rng(batch, 1), steps]), src_t], f"{self.name}_in_index")

    def to_batch_major(self, src_t: str) -> str:
        """[batch, time] indices into a time-major tensor as [time*batch, U]: row src_t[b, t]*B + b."""
        batch, _ = self.dims()
        return self.b.op("Add", [self.b.op("Mul", [src_t, batch]), self.rng(batch, 0)], f"{self.name}_out_index")


def _fused(
    b: GraphBuilder,
    name: str,
    cell: Cell,
    x: str,
    initial: list[str],
    opts: RecurrentOptions,
    lens: str | None = None,
    front_rows: str | None = None,
) -> tuple[str, list[str]]:
    """The ONNX LSTM/GRU op, always run forward over the steps Keras runs, in Keras' order.

    Keras runs the steps of P = x, or x reversed for go_backwards, and returns outputs in P's
    order. Without a mask the input goes time-major with a `Transpose`, or with go_backwards one
    `Gather` that also reverses time.

    With a mask (`lens` [batch]: each row's number of valid steps; the caller checked that every
    row is back-padded or front-padded, `front_rows` [batch] BOOL, and none is empty) the op takes
    `sequence_lens` and needs each row's valid steps first. Where they lead P nothing moves; where
    they trail P (front padding forward, back padding with go_backwards) the row is rotated by its
    number of masked steps (`shift`). One `Gather` on x does that and goes time-major; another on
    Y rotates back, goes batch-major and fills the masked steps with what Keras outputs there:
    where they lead P, zeros (the op's zeros past the row's length: Keras' previous output before
    any valid step); where they trail P, the last valid output, or zeros with
    `zero_output_for_mask` (Bidirectional). The final states are the op's: masked steps keep the
    state.

    The op's own `direction="reverse"` is not used: ORT implements it with a reversed copy of the
    input and of Y inside the op.

    Measured (2-core EPYC, ORT 1.32, 1 thread, thread CPU time, batch 32, T=100, 64 -> 128):
    Gather [3200, 64] -> [100, 32, 64] 0.062 ms vs Transpose 0.098 ms (+ a time-major Slice
    reversal 0.069 ms); Gather [3200, 128] -> [32, 100, 128] 0.090 ms vs Transpose 0.153 ms (+ a
    `Where` repeating the last output 0.278 ms); the LSTM op ~8 ms. End to end (1 thread, thread
    CPU time, median ms, before this form / now / tf2onnx): LSTM go_backwards 7.85 (Slice +
    Transpose) / 7.81 / 7.87 (ReverseSequence + Transpose), GRU go_backwards 7.42 / 7.34 / 8.48,
    Bidirectional LSTM 16.42 / 16.20 / 16.45 (the backward sequence re-aligned in this Gather, see
    `RecurrentOptions.reverse_output`, instead of Transpose + Slice): within noise of each other,
    the op is ~98% of the time. Measured and not taken: a Gather in place of the two Transposes
    of the plain layer (7.66 vs 7.65 ms), and one `direction="bidirectional"` op for Bidirectional
    as tf2onnx emits (17.06 vs 17.03 ms).
    """
    u = cell.units
    masked = lens is not None
    ti = _TimeIndex(b, name, x)
    shift = limit = None
    if masked:
        # Rows whose valid steps trail P: front-padded forward, back-padded (not front) backwards.
        trailing = front_rows if not opts.go_backwards else b.op("Not", [front_rows])
        assert trailing is not None
        steps = ti.dims()[1]
        masked_steps = b.op("Sub", [steps, lens], f"{name}_masked_steps")
        shift = b.op("Mul", [b.op("Cast", [trailing], to=INT64), masked_steps], f"{name}_shift")
        if opts.return_sequences and not opts.zero_output_for_mask:
            # Leading valid steps: past the row's length repeat its last output.
            limit = b.op("Where", [trailing, b.op("Sub", [steps, b.i64(1)]), b.op("Sub", [lens, b.i64(1)])])
        elif not opts.return_sequences and opts.zero_output_for_mask:
            # The last output is zeros unless P's last step is valid.
            keep = b.op("Or", [trailing, b.op("Equal", [lens, steps])], f"{name}_last_valid")
    if not masked and not opts.go_backwards:
        xt = b.op("Transpose", [x], f"{name}_time_major", perm=[1, 0, 2])
    else:
        _, steps = ti.dims()
        t = ti.rng(steps, 0)
        src_t = b.op("Sub", [b.op("Sub", [steps, b.i64(1)]), t]) if opts.go_backwards else t
        if shift is not None:
            # The op's step t is P's step t + shift.
            row_shift = b.op("Unsqueeze", [shift, b.i64([0])])
            src_t = b.op("Sub" if opts.go_backwards else "Add", [src_t, row_shift])
            src_t = b.op("Mod", [src_t, steps], f"{name}_src_t")
        flat = b.op("Reshape", [x, b.i64([-1, cell.kernel.shape[0]])], f"{name}_rows")
        xt = b.op("Gather", [flat, ti.to_time_major(src_t)], f"{name}_time_major", axis=0)
    if cell.kind == "lstm":
        w = _lstm_onnx_order(cell.kernel, u).T[None]
        r = _lstm_onnx_order(cell.recurrent_kernel, u).T[None]
        wb = _lstm_onnx_order(cell.bias, u) if cell.bias is not None else np.zeros(4 * u, np.float32)
        bias = np.concatenate([wb, np.zeros_like(wb)])[None]
    else:
        w = cell.kernel.T[None]
        r = cell.recurrent_kernel.T[None]
        if cell.bias is None:
            bias = np.zeros((1, 6 * u), np.float32)
        elif cell.reset_after:
            bias = np.concatenate([cell.bias[0], cell.bias[1]])[None]
        else:
            bias = np.concatenate([cell.bias, np.zeros_like(cell.bias)])[None]
    ins = [
        xt,
        b.root.const(w, f"{name}_W"),
        b.root.const(r, f"{name}_R"),
        b.root.const(bias, f"{name}_B"),
        b.op("Cast", [lens], f"{name}_seq_lens", to=INT32) if masked else "",
        b.op("Unsqueeze", [initial[0], b.i64([0])], f"{name}_h0"),
    ]
    y = b.name(f"{name}_Y") if opts.return_sequences else ""
    y_h = b.name(f"{name}_Y_h")
    outs = [y, y_h]
    if cell.kind == "lstm":
        ins.append(b.op("Unsqueeze", [initial[1], b.i64([0])], f"{name}_c0"))
        outs.append(b.name(f"{name}_Y_c"))
        b.op_into("LSTM", ins, outs, hidden_size=u)
    else:
        b.op_into("GRU", ins, outs, hidden_size=u, linear_before_reset=int(cell.reset_after))
    states = [b.op("Squeeze", [o, b.i64([0])], f"{name}_{k}") for o, k in zip(outs[1:], cell.state_kinds, strict=True)]
    last = states[0]
    if not opts.return_sequences:
        if masked and opts.zero_output_for_mask:
            last = b.op("Where", [b.op("Unsqueeze", [keep, b.i64([1])]), last, b.root.const(0.0, "zero")])
        return last, states
    if not masked and not opts.reverse_output:
        seq = b.op("Squeeze", [y, b.i64([1])], f"{name}_seq_tm")
        return b.op("Transpose", [seq], f"{name}_seq", perm=[1, 0, 2]), states
    steps = ti.dims()[1]
    k = ti.rng(steps, 1)
    if opts.reverse_output:
        k = b.op("Sub", [b.op("Sub", [steps, b.i64(1)]), k], f"{name}_reversed_k")
    src_t = k
    if shift is not None:
        # P's step k is the op's step k - shift: zeros (past the row's length) where k < shift.
        src_t = b.op("Mod", [b.op("Sub", [k, b.op("Unsqueeze", [shift, b.i64([1])])]), steps])
    if limit is not None:
        src_t = b.op("Min", [src_t, b.op("Unsqueeze", [limit, b.i64([1])])], f"{name}_out_t")
    flat = b.op("Reshape", [y, b.i64([-1, u])], f"{name}_y_rows")
    return b.op("Gather", [flat, ti.to_batch_major(src_t)], f"{name}_seq", axis=0), states


def _projection(b: GraphBuilder, name: str, cell: Cell, x: str) -> str:
    """x @ kernel (+ input bias) for all timesteps at once."""
    xp = b.op("MatMul", [x, b.root.const(cell.kernel, f"{name}_kernel")], f"{name}_xproj")
    bias = _input_bias(cell)
    if bias is not None:
        xp = b.op("Add", [xp, b.root.const(bias, f"{name}_bias")], f"{name}_xproj")
    return xp


def _input_bias(cell: Cell) -> np.ndarray | None:
    if cell.bias is None:
        return None
    if cell.kind == "gru" and cell.reset_after:
        return cell.bias[0]
    return cell.bias


def _step(sb: GraphBuilder, ctx: ConvertContext, name: str, cell: Cell, xp: str, states: list[str]) -> list[str]:
    """One cell step inside a Scan body: xp = projected input (bias included). Returns new states."""
    root = sb.root
    u = cell.units
    km = ctx.keras_major

    def act(v: str) -> str:
        return activations.apply(sb, cell.activation, v, km)

    def rec(v: str) -> str:
        return activations.apply(sb, cell.recurrent_activation, v, km)

    h = states[0]
    if cell.kind == "simple":
        z = sb.op("Add", [xp, sb.op("MatMul", [h, root.const(cell.recurrent_kernel, f"{name}_rkernel")])])
        return [act(z)]
    if cell.kind == "lstm":
        z = sb.op("Add", [xp, sb.op("MatMul", [h, root.const(cell.recurrent_kernel, f"{name}_rkernel")])])
        i, f, g, o = sb.op("Split", [z], f"{name}_gates", n_out=4, axis=1)
        c = sb.op("Add", [sb.op("Mul", [rec(f), states[1]]), sb.op("Mul", [rec(i), act(g)])], f"{name}_c")
        h_new = sb.op("Mul", [rec(o), act(c)], f"{name}_h")
        return [h_new, c]
    # GRU
    xz, xr, xh = sb.op("Split", [xp], f"{name}_xgates", n_out=3, axis=1)
    one = root.const(1.0, "one")
    if cell.reset_after:
        hr = sb.op("MatMul", [h, root.const(cell.recurrent_kernel, f"{name}_rkernel")])
        if cell.bias is not None:
            hr = sb.op("Add", [hr, root.const(cell.bias[1], f"{name}_rbias")])
        hz, hrr, hh = sb.op("Split", [hr], f"{name}_hgates", n_out=3, axis=1)
        z = rec(sb.op("Add", [xz, hz]))
        r = rec(sb.op("Add", [xr, hrr]))
        cand = act(sb.op("Add", [xh, sb.op("Mul", [r, hh])]))
    else:
        rk = cell.recurrent_kernel
        hzr = sb.op("MatMul", [h, root.const(rk[:, : 2 * u], f"{name}_rkernel_zr")])
        hz, hrr = sb.op("Split", [hzr], f"{name}_hgates", n_out=2, axis=1)
        z = rec(sb.op("Add", [xz, hz]))
        r = rec(sb.op("Add", [xr, hrr]))
        rh = sb.op("MatMul", [sb.op("Mul", [r, h]), root.const(rk[:, 2 * u :], f"{name}_rkernel_h")])
        cand = act(sb.op("Add", [xh, rh]))
    h_new = sb.op("Add", [sb.op("Mul", [z, h]), sb.op("Mul", [sb.op("Sub", [one, z]), cand])], f"{name}_h")
    return [h_new]


def _scan(
    ctx: ConvertContext,
    b: GraphBuilder,
    name: str,
    cells: list[Cell],
    x: str,
    mask: str | None,
    initial: list[str],
    opts: RecurrentOptions,
) -> tuple[str, list[str]]:
    last_units = cells[-1].units
    carry_prev = mask is not None and not opts.zero_output_for_mask
    xp = _projection(b, f"{name}_cell0" if len(cells) > 1 else name, cells[0], x)
    scan_inputs = [xp]
    mask3 = None
    if mask is not None:
        mask3 = b.op("Unsqueeze", [mask, b.i64([2])], f"{name}_mask3")
        scan_inputs.append(mask3)
    state_inits = list(initial)
    if carry_prev:
        state_inits.append(batch_zeros(b, x, last_units))

    sb = b.sub()
    body_states = [sb.name(f"{name}_s{i}") for i in range(len(state_inits))]
    widths = [c.units for c in cells for _ in c.state_kinds] + ([last_units] if carry_prev else [])
    for s, w in zip(body_states, widths, strict=False):
        sb.add_input(s, FLOAT, [None, w])
    xp_t = sb.name(f"{name}_xp_t")
    sb.add_input(xp_t, FLOAT, [None, cells[0].gates * cells[0].units])
    m_t = None
    if mask is not None:
        m_t = sb.name(f"{name}_m_t")
        sb.add_input(m_t, BOOL, [None, 1])

    new_states: list[str] = []
    inp = xp_t
    pos = 0
    for j, cell in enumerate(cells):
        n = len(cell.state_kinds)
        cname = f"{name}_cell{j}" if len(cells) > 1 else name
        if j > 0:
            inp = sb.op("MatMul", [inp, b.root.const(cell.kernel, f"{cname}_kernel")])
            bias = _input_bias(cell)
            if bias is not None:
                inp = sb.op("Add", [inp, b.root.const(bias, f"{cname}_bias")])
        out_states = _step(sb, ctx, cname, cell, inp, body_states[pos : pos + n])
        new_states.extend(out_states)
        inp = out_states[0]
        pos += n
    out = inp
    if m_t is not None:
        new_states = [sb.op("Where", [m_t, s, old]) for s, old in zip(new_states, body_states, strict=False)]
        if carry_prev:
            out = sb.op("Where", [m_t, out, body_states[-1]], f"{name}_out")
            new_states.append(out)
        elif opts.zero_output_for_mask:
            out = sb.op("Where", [m_t, out, b.root.const(0.0, "zero")], f"{name}_out")
    body_outs = []
    for s, w in zip(new_states, widths, strict=False):
        o = sb.name(f"{s}_next")
        sb.op_into("Identity", [s], [o])
        sb.add_output(o, FLOAT, [None, w])
        body_outs.append(o)
    if opts.return_sequences:
        o = sb.name(f"{name}_y_t")
        sb.op_into("Identity", [out], [o])
        sb.add_output(o, FLOAT, [None, last_units])
    body = sb.graph(f"{name}_body")

    n_scan_in = len(scan_inputs)
    n_outs = len(body_outs) + int(opts.return_sequences)
    outs = b.op(
        "Scan",
        state_inits + scan_inputs,
        f"{name}_scan",
        n_out=n_outs,
        body=body,
        num_scan_inputs=n_scan_in,
        scan_input_axes=[1] * n_scan_in,
        scan_input_directions=[int(opts.go_backwards)] * n_scan_in,
        **({"scan_output_axes": [1]} if opts.return_sequences else {}),
    )
    if not isinstance(outs, list):
        outs = [outs]
    n_states = len(initial)
    finals = outs[:n_states]
    if opts.return_sequences:
        output = outs[-1]
    elif carry_prev:
        output = outs[n_states]
    elif mask is not None and opts.zero_output_for_mask:
        # The last processed step decides: its output, or zeros if it is masked.
        idx = 0 if opts.go_backwards else -1
        m_last = b.op("Gather", [mask, b.i64([idx])], f"{name}_mask_last", axis=1)
        output = b.op("Where", [m_last, finals[-len(cells[-1].state_kinds)], b.const(0.0, "zero")])
    else:
        output = finals[n_states - len(cells[-1].state_kinds)]
    return output, finals


# ----------------------------------------------------------------------------- layer plumbing


def emit_recurrent_layer(
    ctx: ConvertContext,
    layer: Layer,
    x: Value,
    initial_state: list[Value],
    cells: list[Cell],
    opts: RecurrentOptions,
    kinds: list[str] | None = None,
    masked: bool = True,
) -> tuple[Value, list[Value]]:
    """State graph I/O + the recurrence for one (possibly stacked-cell) recurrent layer.

    `masked=False` (`CallValues.masked`): Keras runs the call without `x.mask`; the output with
    return_sequences still carries `x.mask` (RNN.compute_mask). Returns the layer's output and its
    final states (as Values, in Keras' order).
    """
    if x.rank != 3:
        raise ctx.error(layer, f"expects a 3D input [batch, time, features], got rank {x.rank}")
    widths = [c.units for c in cells for _ in c.state_kinds]
    if kinds is None:
        if len(cells) == 1:
            kinds = cells[0].state_kinds
        else:
            kinds = [f"cell{j}_{k}" for j, c in enumerate(cells) for k in c.state_kinds]
    inputs = [ctx.state_input(layer.name, k, [w]) for k, w in zip(kinds, widths, strict=False)]
    if initial_state:
        if len(initial_state) != len(kinds):
            raise ctx.error(layer, f"called with {len(initial_state)} initial states, it has {len(kinds)}")
        inputs = [v.name for v in initial_state]
    if opts.stateful:
        ctx.stateful_layers.append(layer.name)
    out, finals = run_recurrent(ctx, layer.name, cells, x, x.mask if masked else None, inputs, opts)
    for k, t in zip(kinds, finals, strict=False):
        ctx.state_output(layer.name, k, t)
    units = cells[-1].units
    if opts.return_sequences:
        output = Value(out, (x.shape[0], x.shape[1], units), FLOAT, x.mask)
    else:
        output = Value(out, (x.shape[0], units), FLOAT, None)
    states = [Value(t, (x.shape[0], w), FLOAT, None) for t, w in zip(finals, widths, strict=False)]
    return output, states


def single_cell_layer(ctx: ConvertContext, layer: Layer, call: Any) -> list[Value]:
    """LSTM / GRU / SimpleRNN (and CuDNN variants): one cell, options from the layer config."""
    cfg = layer.config
    x = call.x
    if x.rank != 3 or x.shape[-1] is None:
        raise ctx.error(layer, "expects a 3D input with a known feature dimension")
    check_time_major(ctx, layer, cfg)
    cell = make_cell(ctx, layer, layer.class_name, cfg, layer.weights, int(x.shape[-1]))
    opts = options_from_config(cfg)
    output, states = emit_recurrent_layer(ctx, layer, x, call.initial_state, [cell], opts, masked=call.masked)
    return [output, *states] if opts.return_state else [output]


def _cell_specs(ctx: ConvertContext, layer: Layer, class_name: str, cfg: dict[str, Any]) -> list[tuple[str, dict]]:
    """(cell class, cell config) for each cell of a recurrent layer config, stacked order."""
    if class_name in CELL_KIND:
        return [(class_name, cfg)]
    if class_name != "RNN":
        raise ctx.error(layer, f"{class_name} is not a recurrent layer this exporter knows")
    spec = cfg.get("cell")
    if isinstance(spec, list):
        cells = spec
    elif isinstance(spec, dict) and spec.get("class_name") == "StackedRNNCells":
        cells = (spec.get("config") or {}).get("cells") or []
    elif isinstance(spec, dict):
        cells = [spec]
    else:
        raise ctx.error(layer, "RNN config has no cell")
    out = []
    for c in cells:
        cls = str(c.get("class_name"))
        if cls not in CELL_KIND or not cls.endswith("Cell"):
            raise ctx.error(layer, f"unsupported or custom RNN cell class {cls!r}")
        out.append((cls, dict(c.get("config") or {})))
    return out


def build_cells(
    ctx: ConvertContext,
    layer: Layer,
    class_name: str,
    cfg: dict[str, Any],
    weights: list[np.ndarray],
    input_dim: int,
) -> tuple[list[Cell], int]:
    """The cells of a recurrent layer (LSTM/GRU/SimpleRNN/CuDNN*/RNN), and how many weights they use."""
    cells: list[Cell] = []
    pos = 0
    dim = input_dim
    for cls, ccfg in _cell_specs(ctx, layer, class_name, cfg):
        n = cell_weight_count(cls, ccfg)
        cell = make_cell(ctx, layer, cls, ccfg, weights[pos : pos + n], dim)
        cells.append(cell)
        pos += n
        dim = cell.units
    return cells, pos


def stacked_kinds(cells: list[Cell], prefix: str = "") -> list[str]:
    if len(cells) == 1:
        return [f"{prefix}{k}" for k in cells[0].state_kinds]
    return [f"{prefix}cell{j}_{k}" for j, c in enumerate(cells) for k in c.state_kinds]
