"""The Scan form: the input projection of all timesteps as one MatMul outside, then a `Scan` over
time whose body is each cell's `onnx_step` and the mask's `Where`s. Exact for every activation and
any mask (front or back padding, holes), for stacked cells, and runs on ORT's CUDA EP.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from seqserve.cells import Cell
from seqserve.export import activations
from seqserve.export.builder import BOOL, FLOAT, GraphBuilder
from seqserve.export.context import ConvertContext
from seqserve.export.recurrent.options import RecurrentOptions


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


def _projection(b: GraphBuilder, name: str, cell: Cell, x: str) -> str:
    """x @ kernel (+ input bias) for all timesteps at once."""
    xp = b.op("MatMul", [x, b.root.const(cell.kernel, f"{name}_kernel")], f"{name}_xproj")
    bias = cell.input_bias()
    if bias is not None:
        xp = b.op("Add", [xp, b.root.const(bias, f"{name}_bias")], f"{name}_xproj")
    return xp


def _step(sb: GraphBuilder, ctx: ConvertContext, name: str, cell: Cell, xp: str, states: list[str]) -> list[str]:
    """One cell step inside a Scan body: xp = projected input (bias included). Returns new states."""
    km = ctx.keras_major
    activation, recurrent = cell.activation, cell.recurrent_activation

    def act(v: str) -> str:
        assert activation is not None
        return activations.apply(sb, activation, v, km)

    def rec(v: str) -> str:
        assert recurrent is not None
        return activations.apply(sb, recurrent, v, km)

    return cell.onnx_step(sb, name, xp, states, act, rec)


def scan_form(
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
    widths = [w for c in cells for w in c.state_widths] + ([last_units] if carry_prev else [])
    for s, w in zip(body_states, widths, strict=False):
        sb.add_input(s, FLOAT, [None, w])
    xp_t = sb.name(f"{name}_xp_t")
    sb.add_input(xp_t, FLOAT, [None, cells[0].gates * cells[0].units])
    m_t = None
    if mask is not None:
        m_t = sb.name(f"{name}_m_t")
        sb.add_input(m_t, BOOL, [None, 1])

    keras02 = m_t is not None and opts.keras02_masking
    m_f = sb.op("Cast", [m_t], f"{name}_m_float", to=FLOAT) if keras02 else None
    new_states: list[str] = []
    inp = xp_t
    pos = 0
    for j, cell in enumerate(cells):
        n = len(cell.state_kinds)
        cname = f"{name}_cell{j}" if len(cells) > 1 else name
        if j > 0:
            inp = sb.op("MatMul", [inp, b.root.const(cell.kernel, f"{cname}_kernel")])
            bias = cell.input_bias()
            if bias is not None:
                inp = sb.op("Add", [inp, b.root.const(bias, f"{cname}_bias")])
        out_states = _step(sb, ctx, cname, cell, inp, body_states[pos : pos + n])
        inp = out_states[0]
        if m_f is not None:
            out_states = cell.onnx_mask_keras02(sb, cname, out_states, m_f)
        new_states.extend(out_states)
        pos += n
    out = inp
    if keras02:
        if carry_prev:  # the last output as computed, masked or not
            new_states.append(out)
    elif m_t is not None:
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
        output = reverse_time(b, outs[-1]) if opts.reverse_output else outs[-1]
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
