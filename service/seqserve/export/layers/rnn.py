"""The generic `RNN` layer with SimpleRNNCell / GRUCell / LSTMCell or StackedRNNCells."""

from __future__ import annotations

from seqserve.export.context import CallValues, ConvertContext, Value
from seqserve.export.recurrent import (
    build_cells,
    check_time_major,
    emit_recurrent_layer,
    options_from_config,
    stacked_kinds,
)
from seqserve.export.registry import register
from seqserve.keras.model import Layer


@register("RNN")
def rnn(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    x = call.x
    if x.rank != 3 or x.shape[-1] is None:
        raise ctx.error(layer, "expects a 3D input with a known feature dimension")
    check_time_major(ctx, layer, layer.config)
    cells, used = build_cells(ctx, layer, "RNN", layer.config, layer.weights, int(x.shape[-1]))
    if used != len(layer.weights):
        raise ctx.error(layer, f"the cells use {used} weight arrays, the file has {len(layer.weights)}")
    opts = options_from_config(layer.config)
    output, states = emit_recurrent_layer(
        ctx, layer, x, call.initial_state, cells, opts, stacked_kinds(cells), masked=call.masked
    )
    return [output, *states] if opts.return_state else [output]
