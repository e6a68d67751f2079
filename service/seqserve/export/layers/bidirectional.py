"""Bidirectional(LSTM/GRU/SimpleRNN/RNN): two recurrences, the backward one re-aligned in time,
merged (concat/sum/mul/ave/None). Keras makes both return zeros at masked steps when they return
sequences (`zero_output_for_mask`)."""

from __future__ import annotations

from seqserve.cells import state_names
from seqserve.export.builder import FLOAT
from seqserve.export.context import CallValues, ConvertContext, Value
from seqserve.export.recurrent import RecurrentOptions, build_cells, emit_recurrent_layer
from seqserve.export.registry import register
from seqserve.keras.model import Layer


@register("Bidirectional")
def bidirectional(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    x = call.x
    if x.rank != 3 or x.shape[-1] is None:
        raise ctx.error(layer, "expects a 3D input with a known feature dimension")
    cfg = layer.config
    fspec = cfg.get("layer") or {}
    fcls, fcfg = str(fspec.get("class_name")), dict(fspec.get("config") or {})
    bspec = cfg.get("backward_layer")
    if isinstance(bspec, dict):
        bcls, bcfg = str(bspec.get("class_name")), dict(bspec.get("config") or {})
    else:
        bcls, bcfg = fcls, dict(fcfg, go_backwards=not fcfg.get("go_backwards", False))
    dim = int(x.shape[-1])
    fcells, nf = build_cells(ctx, layer, fcls, fcfg, layer.weights, dim)
    bcells, nb = build_cells(ctx, layer, bcls, bcfg, layer.weights[nf:], dim)
    if nf + nb != len(layer.weights):
        raise ctx.error(layer, f"forward+backward use {nf + nb} weight arrays, the file has {len(layer.weights)}")
    fopts, bopts = RecurrentOptions.from_config(fcfg), RecurrentOptions.from_config(bcfg)
    for o in (fopts, bopts):
        o.zero_output_for_mask = o.return_sequences
    # The backward layer's sequence, re-aligned with the input (time reversed) by the layer itself.
    bopts.reverse_output = bopts.return_sequences
    half = len(call.initial_state) // 2
    f_init, b_init = call.initial_state[:half], call.initial_state[half:]
    # Keras 3 runs both directions unmasked when the call has states (`call.masked`); the merged
    # output still carries x's mask (Bidirectional.compute_mask).
    fkinds, bkinds = state_names(fcells, "forward_"), state_names(bcells, "backward_")
    y, fstates = emit_recurrent_layer(ctx, layer, x, f_init, fcells, fopts, fkinds, masked=call.masked)
    y_rev, bstates = emit_recurrent_layer(ctx, layer, x, b_init, bcells, bopts, bkinds, masked=call.masked)
    b = ctx.b
    mode = cfg.get("merge_mode", "concat")
    if mode is None:
        outputs = [y, y_rev]
    else:
        if mode == "concat":
            out = b.op("Concat", [y.name, y_rev.name], layer.name, axis=-1)
            shape = (*y.shape[:-1], y.shape[-1] + y_rev.shape[-1])
        elif mode in ("sum", "ave"):
            out = b.op("Add", [y.name, y_rev.name], layer.name)
            if mode == "ave":
                out = b.op("Div", [out, b.const(2.0)], layer.name)
            shape = y.shape
        elif mode == "mul":
            out = b.op("Mul", [y.name, y_rev.name], layer.name)
            shape = y.shape
        else:
            raise ctx.error(layer, f"unknown merge_mode {mode!r}")
        outputs = [Value(out, shape, FLOAT, y.mask)]
    if fopts.return_state:
        return [*outputs, *fstates, *bstates]
    return outputs
