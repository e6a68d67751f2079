"""A masked layer whose cell has a fused op: that op where the mask allows, the Scan form elsewhere.

The choice is made on the data, inside the graph (`If`): a batch whose rows are each padded at one
end, none empty, runs the fused op with `sequence_lens`; holes or empty rows run the Scan form.
"""

from __future__ import annotations

from seqserve.cells import Cell, FusedOp
from seqserve.export.builder import FLOAT, INT64
from seqserve.export.context import ConvertContext
from seqserve.export.recurrent.fused import fused_form
from seqserve.export.recurrent.options import RecurrentOptions
from seqserve.export.recurrent.scan import scan_form


def padded_or_scan(
    ctx: ConvertContext,
    name: str,
    cells: list[Cell],
    op: FusedOp,
    x: str,
    mask: str,
    initial: list[str],
    opts: RecurrentOptions,
) -> tuple[str, list[str]]:
    """A masked LSTM/GRU with default activations. When every row of the batch is padded at one
    end, back (valid steps first) or front (masked steps first, `pad_sequences`' default), rows
    of both kinds mixed, and no row is empty, the fused op runs (`fused_form` with `sequence_lens`);
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
            out, finals = fused_form(sb, name, cells[0], op, x, initial, opts, lens=lens, front_rows=front_rows)
        else:
            out, finals = scan_form(ctx, sb, name, cells, x, mask, initial, opts)
        for t in (out, *finals):
            o = sb.name(f"{name}_{form}_out")
            sb.op_into("Identity", [t], [o])
            sb.add_output(o, FLOAT, None)
        branches.append(sb.graph(f"{name}_{form}"))
    outs = b.op("If", [cond], f"{name}_if", n_out=1 + len(initial), then_branch=branches[0], else_branch=branches[1])
    return outs[0], outs[1:]
