"""Evaluate a KerasModel with NumPy, following Keras 3's rules (and, for hard_sigmoid and masking a
recurrent call given states, those of the Keras generation that wrote the file).

The walk over the layer calls and Keras' call rules (which tensors are states, which calls get a
mask) are `seqserve.keras`'s, shared with the exporter; what each layer computes is written here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqserve.cells import CELL_LAYERS
from seqserve.keras.calls import call_inputs, keras_passes_mask
from seqserve.keras.graph import Unresolved, calls_in_order, output_refs
from seqserve.keras.model import KerasModel, Layer, TensorRef
from seqserve.reference.activations import Array, NoReference
from seqserve.reference.layers import LAYERS, op
from seqserve.reference.recurrent import Masked, cells_of, recurrent


class _Runner:
    def __init__(self, model: KerasModel, states: dict[str, Array]) -> None:
        self.km = model.keras_major
        self.states_in = states
        self.states_out: dict[str, Array] = {}
        self.call_index = 0
        # Keras runs the current call without its input's mask (Keras 3, a call given states).
        self.unmasked = False

    def _owner(self, layer: Layer) -> str:
        """A layer called more than once has a set of states per call: `<layer>`, `<layer>@1`..."""
        return layer.name if self.call_index == 0 else f"{layer.name}@{self.call_index}"

    def _recurrent(
        self, layer: Layer, cls: str, cfg: dict[str, Any], w: list[Array], x: Masked, init: list[Array], prefix: str,
        zero_out: bool | None,
    ) -> tuple[Masked, list[Array], int]:  # fmt: skip
        owner = self._owner(layer)
        cells, used = cells_of(cls, cfg, w, x[0].shape[-1], self.km)

        def initial_state(name: str, batch: int, width: int) -> Array:
            fed = self.states_in.get(f"{owner}.{name}")
            return np.zeros((batch, width)) if fed is None else np.asarray(fed, np.float64)

        mask = None if self.unmasked else x[1]
        out, finals, ordered = recurrent(cells, cfg, self.km, x, mask, init, initial_state, prefix, zero_out)
        self.states_out.update({f"{owner}.{name}": value for name, value in finals.items()})
        return out, ordered, used

    def _bidirectional(self, layer: Layer, w: list[Array], x: Masked, init: list[Array]) -> list[Masked]:
        cfg = layer.config
        forward = cfg["layer"]
        fcls, fcfg = forward["class_name"], dict(forward.get("config") or {})
        backward = cfg.get("backward_layer")
        if isinstance(backward, dict):
            bcls, bcfg = backward["class_name"], dict(backward.get("config") or {})
        else:
            bcls, bcfg = fcls, dict(fcfg, go_backwards=not fcfg.get("go_backwards", False))
        half = len(init) // 2
        rs = bool(fcfg.get("return_sequences", False))
        # Both directions return zeros at masked steps when they return sequences.
        y, fs, used = self._recurrent(layer, fcls, fcfg, w, x, init[:half], "forward_", rs)
        yr, bs, _ = self._recurrent(layer, bcls, bcfg, w[used:], x, init[half:], "backward_", rs)
        a, b = y[0], (yr[0][:, ::-1] if rs else yr[0])
        merged = {
            "concat": lambda: [np.concatenate([a, b], -1)],
            "sum": lambda: [a + b],
            "ave": lambda: [(a + b) / 2],
            "mul": lambda: [a * b],
            None: lambda: [a, b],
        }[cfg.get("merge_mode", "concat")]()
        outs = [(v, y[1]) for v in merged]
        return outs + [(s, None) for s in fs + bs] if fcfg.get("return_state") else outs

    def call(self, layer: Layer, ins: list[Masked], init: list[Array] = (), args: list[Any] = ()) -> list[Masked]:  # type: ignore[assignment]
        cls, cfg = layer.class_name, layer.config
        w = [np.asarray(a, np.float64) for a in layer.weights]
        if cls in CELL_LAYERS or cls == "RNN":
            out, finals, _ = self._recurrent(layer, cls, cfg, w, ins[0], list(init), "", None)
            return [out, *[(s, None) for s in finals]] if cfg.get("return_state") else [out]
        if cls == "Bidirectional":
            return self._bidirectional(layer, w, ins[0], list(init))
        if layer.kind.startswith("ops."):
            return [(op(cls, cfg, ins, list(args)), None)]
        fn = LAYERS.get(cls)
        if fn is None:
            raise NoReference(cls)
        return fn(layer, ins, w, self.km, self.call)


def run_reference(
    model: KerasModel, inputs: list[Array], states: dict[str, Array] | None = None
) -> tuple[list[Array], dict[str, Array]]:
    """Model outputs (in the exported graph's order) and final states, computed in float64."""
    runner = _Runner(model, states or {})
    values: dict[TensorRef, Masked] = {}
    for ref, x in zip(model.inputs, inputs, strict=False):
        values[TensorRef(ref.layer)] = (np.asarray(x), None)
    try:
        for layer, i, call in calls_in_order(model, values.__contains__):
            in_refs, state_refs = call_inputs(model, layer, call)
            ins = [values[r] for r in in_refs]
            if call.mask is not None:
                mv = values[call.mask][0]
                ins[0] = (ins[0][0], mv if mv.ndim == 2 else None)
            init = [values[r][0] for r in state_refs]
            runner.call_index = i
            runner.unmasked = not keras_passes_mask(model, call)
            for t, v in enumerate(runner.call(layer, ins, init, call.args)):
                values[TensorRef(layer.name, i, t)] = v
    except Unresolved:
        raise NoReference("unresolved graph") from None
    return [values[ref][0] for ref in output_refs(model, values.__contains__)], runner.states_out
