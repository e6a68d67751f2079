"""The glue the reader leaves where it inlined a nested model: `_Alias` for the nested model's
InputLayer, `_Outputs` for the nested model's outputs."""

from __future__ import annotations

from seqserve.export.context import CallValues, ConvertContext, Value
from seqserve.export.registry import register
from seqserve.keras.model import ALIAS, OUTPUTS, Layer


@register(ALIAS)
def alias(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    return [call.x]


@register(OUTPUTS)
def outputs(ctx: ConvertContext, layer: Layer, call: CallValues) -> list[Value]:
    return list(call.inputs)
