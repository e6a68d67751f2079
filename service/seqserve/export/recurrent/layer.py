"""A recurrent layer as ONNX: its cells from the config, its state inputs and outputs, and the graph
form that runs it (the package docstring says which form when)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from seqserve.cells import Cell, UnknownCell, layer_cells, state_names
from seqserve.export import activations
from seqserve.export.builder import FLOAT
from seqserve.export.context import CallValues, ConvertContext, Value
from seqserve.export.recurrent.fused import fused_form
from seqserve.export.recurrent.options import RecurrentOptions
from seqserve.export.recurrent.padded import padded_or_scan
from seqserve.export.recurrent.scan import scan_form
from seqserve.keras.model import Layer


def build_cells(
    ctx: ConvertContext,
    layer: Layer,
    class_name: str,
    cfg: Mapping[str, Any],
    weights: list[np.ndarray],
    input_dim: int,
) -> tuple[list[Cell], int]:
    """The cells of a recurrent layer config, weights checked against it, and how many weights they use."""
    if cfg.get("time_major"):  # Keras 2 layers may be time-major ([time, batch, features]); models almost never are
        raise ctx.error(layer, "time_major=True recurrent layers are not supported")

    def read(part: list[np.ndarray], shapes: Any, names: Any) -> list[np.ndarray]:
        return ctx.weights(Layer(layer.name, layer.class_name, dict(cfg), part), shapes, names)

    try:
        found, used = layer_cells(class_name, cfg, ctx.keras_major, input_dim, weights, read)
    except UnknownCell as e:
        raise ctx.error(layer, str(e)) from None
    for cell, ccfg in found:
        checked = [("activation", cell.activation)]
        if cell.has_recurrent_activation:
            checked.append(("recurrent_activation", cell.recurrent_activation))
        for key, name in checked:
            if not activations.is_supported(name):
                raise ctx.error(layer, f"unsupported {key} {ccfg.get(key)!r}")
    return [cell for cell, _ in found], used


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
    op = cells[0].fused(ctx.target) if len(cells) == 1 else None
    if op is not None and mask is None:
        return fused_form(ctx.b, name, cells[0], op, x.name, initial_states, opts)
    if op is not None and not opts.keras02_masking:
        return padded_or_scan(ctx, name, cells, op, x.name, mask, initial_states, opts)
    return scan_form(ctx, ctx.b, name, cells, x.name, mask, initial_states, opts)


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
    widths = [w for c in cells for w in c.state_widths]
    kinds = kinds or state_names(cells)
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


def recurrent_layer(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    """Every one-cell layer (LSTM, GRU, SimpleRNN, CuDNN*) and the generic `RNN` with its cells."""
    x = call.x
    if x.rank != 3 or x.shape[-1] is None:
        raise ctx.error(layer, "expects a 3D input with a known feature dimension")
    cells, used = build_cells(ctx, layer, layer.class_name, layer.config, layer.weights, int(x.shape[-1]))
    if used != len(layer.weights):
        raise ctx.error(layer, f"the cells use {used} weight arrays, the file has {len(layer.weights)}")
    opts = RecurrentOptions.from_config(layer.config)
    output, states = emit_recurrent_layer(ctx, layer, x, call.initial_state, cells, opts, masked=call.masked)
    return [output, *states] if opts.return_state else [output]
