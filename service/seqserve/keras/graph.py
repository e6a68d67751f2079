"""Walking a model's layer calls in dependency order: the one walk the exporter and the reference share."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from seqserve.keras.model import KerasModel, Layer, LayerCall, TensorRef


def calls_in_order(model: KerasModel, produced: Callable[[TensorRef], bool]) -> Iterator[tuple[Layer, int, LayerCall]]:
    """Every call of every layer but the model's inputs, each once every tensor it reads is
    `produced` (the caller evaluates a call before asking for the next). Raises `Unresolved` when the
    calls left read tensors nothing produces."""
    pending = [
        (layer, i) for layer in model.layers if layer.class_name != "InputLayer" for i in range(len(layer.calls))
    ]
    while pending:
        rest = []
        for layer, i in pending:
            call = layer.calls[i]
            refs = [*call.inputs, *call.initial_state, *([call.mask] if call.mask else [])]
            if all(produced(r) for r in refs):
                yield layer, i, call
            else:
                rest.append((layer, i))
        if len(rest) == len(pending):
            missing = sorted({r.layer for layer, i in rest for r in layer.calls[i].inputs if not produced(r)})
            raise Unresolved(rest[0][0], missing)
        pending = rest


def output_refs(model: KerasModel, produced: Callable[[TensorRef], bool]) -> list[TensorRef]:
    """The model's outputs, in order; tensor -1 (a Sequential's last layer) stands for every tensor
    that layer's call produced (its output and, with return_state, its states)."""
    refs: list[TensorRef] = []
    for ref in model.outputs:
        if ref.tensor != -1:
            refs.append(ref)
            continue
        n = 0
        while produced(TensorRef(ref.layer, ref.node, n)):
            refs.append(TensorRef(ref.layer, ref.node, n))
            n += 1
    return refs


class Unresolved(Exception):
    """Layer calls whose inputs no layer produces."""

    def __init__(self, layer: Layer, missing: list[str]) -> None:
        super().__init__(f"inputs never produced (from {', '.join(missing)})")
        self.layer, self.missing = layer, missing
