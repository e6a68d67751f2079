"""Recurrent layers in NumPy: Keras' loop over time around each cell kind's `numpy_step`.

The loop is written here from Keras' `rnn()` (keras/src/backend/*/rnn.py), independently of the
exporter's graph forms: go_backwards, masks (a masked step keeps every state; its output is the
previous output, zeros before the first valid step, or zeros with `zero_output_for_mask`),
stacked cells, and Bidirectional's merge.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from seqserve.cells import Cell, UnknownCell, layer_cells, state_names
from seqserve.reference.activations import Array, NoReference, activation_fn

Masked = tuple[Array, Array | None]  # a value and its [batch, time] mask
# (layer or call owner, state name, batch, width) -> the initial state fed for it
StateSource = Callable[[str, int, int], Array]


class _Step:
    """A cell with its NumPy activations."""

    def __init__(self, cell: Cell, keras_major: int) -> None:
        if cell.activation is None or (cell.has_recurrent_activation and cell.recurrent_activation is None):
            raise NoReference(f"custom activation in a {type(cell).__name__} cell")
        self.cell = cell
        self.act = activation_fn(cell.activation, keras_major)
        self.rec = activation_fn(cell.recurrent_activation, keras_major) if cell.has_recurrent_activation else None

    def __call__(self, x: Array, states: list[Array]) -> list[Array]:
        return self.cell.numpy_step(x, states, self.act, self.rec)  # type: ignore[arg-type]


def cells_of(
    class_name: str, cfg: Mapping[str, Any], weights: list[Array], input_dim: int, km: int
) -> tuple[list[Cell], int]:
    """The layer's cells (on the float64 weights given), and how many weights they took (the rest
    are a Bidirectional's backward layer's)."""
    try:
        found, used = layer_cells(class_name, cfg, km, input_dim, weights, lambda part, *_: part)
    except UnknownCell as e:
        raise NoReference(str(e)) from None
    return [cell for cell, _ in found], used


def recur(
    cells: list[Cell],
    km: int,
    x: Array,
    mask: Array | None,
    init: list[Array],
    go_backwards: bool,
    zero_output_for_mask: bool,
    keras02_masking: bool = False,
) -> tuple[Array, Array, list[Array]]:
    """(all outputs [B,T,U] in processing order, last output, final states). `keras02_masking`:
    Keras 0.2's rule instead (every step computed and output; a masked step's states zeroed)."""
    steps_of = [_Step(cell, km) for cell in cells]
    states = [s.astype(np.float64) for s in init]
    prev = np.zeros((x.shape[0], cells[-1].units))
    outs = []
    steps = range(x.shape[1] - 1, -1, -1) if go_backwards else range(x.shape[1])
    for t in steps:
        inp, new, pos = x[:, t], [], 0
        for step in steps_of:
            n = len(step.cell.state_kinds)
            s = step(inp, states[pos : pos + n])
            inp = s[0]
            if mask is not None and keras02_masking:
                s = step.cell.numpy_mask_keras02(s, mask[:, t][:, None].astype(np.float64))
            new.extend(s)
            pos += n
        out = inp
        if mask is not None and not keras02_masking:
            m = mask[:, t][:, None]
            new = [np.where(m, n, o) for n, o in zip(new, states, strict=False)]
            out = np.where(m, out, 0.0 if zero_output_for_mask else prev)
        states, prev = new, out
        outs.append(out)
    return np.stack(outs, axis=1), outs[-1], states


def recurrent(
    cells: list[Cell],
    cfg: Mapping[str, Any],
    km: int,
    x: Masked,
    mask: Array | None,
    init: list[Array],
    initial_state: StateSource,
    prefix: str,
    zero_out: bool | None,
) -> tuple[Masked, dict[str, Array], list[Array]]:
    """One recurrent layer call: its output (with the mask Keras gives it), its final states by
    state name, and those states in order. `mask` is the one the call computes with."""
    kinds = state_names(cells, prefix)
    widths = [w for c in cells for w in c.state_widths]
    if not init:
        init = [initial_state(k, x[0].shape[0], w) for k, w in zip(kinds, widths, strict=False)]
    rs = bool(cfg.get("return_sequences", False))
    zo = bool(cfg.get("zero_output_for_mask", False)) if zero_out is None else zero_out
    backwards, keras02 = bool(cfg.get("go_backwards", False)), bool(cfg.get("keras02_masking", False))
    seq, last, finals = recur(cells, km, x[0], mask, init, backwards, zo, keras02)
    out: Masked = (seq, x[1]) if rs else (last, None)
    return out, dict(zip(kinds, finals, strict=False)), finals
