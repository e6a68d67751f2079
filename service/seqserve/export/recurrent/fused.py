"""The fused form: a cell's exact ONNX op (`Cell.fused`: LSTM, GRU) over Keras' steps in Keras' order.

Without a mask the input goes time-major with a `Transpose` (or a `Gather` that also reverses time
for go_backwards); with a mask whose rows are each padded at one end, the op takes `sequence_lens`
and two `Gather`s move each row's valid steps first and back (`fused_form`'s docstring).
"""

from __future__ import annotations

from seqserve.cells import Cell, FusedOp
from seqserve.export.builder import INT32, INT64, GraphBuilder
from seqserve.export.recurrent.options import RecurrentOptions


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


def fused_form(
    b: GraphBuilder,
    name: str,
    cell: Cell,
    op: FusedOp,
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
    ins = [
        xt,
        b.root.const(op.w, f"{name}_W"),
        b.root.const(op.r, f"{name}_R"),
        b.root.const(op.b, f"{name}_B"),
        b.op("Cast", [lens], f"{name}_seq_lens", to=INT32) if masked else "",
        b.op("Unsqueeze", [initial[0], b.i64([0])], f"{name}_h0"),
    ]
    y = b.name(f"{name}_Y") if opts.return_sequences else ""
    y_h = b.name(f"{name}_Y_h")
    outs = [y, y_h]
    for state, kind in zip(initial[1:], cell.state_kinds[1:], strict=True):  # LSTM's c
        ins.append(b.op("Unsqueeze", [state, b.i64([0])], f"{name}_{kind}0"))
        outs.append(b.name(f"{name}_Y_{kind}"))
    b.op_into(op.op_type, ins, outs, hidden_size=u, **op.attrs)
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
