"""What a layer converter receives: the values flowing into a layer call, and a context giving it
the graph builder, the target, validated weights and the recurrent-state graph inputs/outputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seqserve.errors import ExportError
from seqserve.export.builder import FLOAT, GraphBuilder
from seqserve.export.target import Target
from seqserve.keras.model import KerasModel, Layer


@dataclass
class Value:
    """A tensor in the graph being built.

    `shape` is the Keras shape, batch first (`None` = free, e.g. batch or timesteps). `mask` is the
    name of a BOOL [batch, timesteps] tensor when Keras would attach a mask to this tensor.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: int = FLOAT
    mask: str | None = None

    @property
    def rank(self) -> int:
        return len(self.shape)


@dataclass
class CallValues:
    """The resolved inputs of one layer call: positional inputs and (optional) initial states."""

    inputs: list[Value]
    initial_state: list[Value] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    args: list[Any] = field(default_factory=list)  # raw Keras 3 positional args (constants of op layers)
    # False when Keras runs the call without the first input's mask although that input has one:
    # Keras 3 fills `mask` in only for a call with a single tensor argument, so
    # `layer(x, initial_state=[h, c])` computes unmasked (keras/src/layers/layer.py, `__call__`
    # step 6), while its output mask is still compute_mask(x, mask of x). Keras 2 masks such calls.
    masked: bool = True

    @property
    def x(self) -> Value:
        return self.inputs[0]

    @property
    def mask(self) -> str | None:
        """The mask Keras' `call()` gets: the first input's mask, or None (see `masked`). The
        output mask (compute_mask) follows `x.mask` either way."""
        return self.inputs[0].mask if self.masked else None


@dataclass
class StateRecord:
    layer: str
    kind: str
    input: str
    output: str
    shape: list[int]
    tensor: str | None = None  # the graph tensor holding the final state, set by the converter


# A converter turns one layer call into graph nodes and returns the call's outputs, in Keras' order
# (for a recurrent layer with return_state: the output, then its states).
Converter = Callable[["ConvertContext", Layer, CallValues], list[Value]]


class ConvertContext:
    def __init__(self, model: KerasModel, builder: GraphBuilder, target: Target) -> None:
        self.model = model
        self.b = builder
        self.target = target
        self.states: list[StateRecord] = []
        self.stateful_layers: list[str] = []
        # Model inputs that are token ids of an Embedding -> the vocabulary size (`Signature.vocabulary_sizes`).
        self.vocabulary_sizes: dict[str, int] = {}
        self.call_index = 0  # which call of the current layer is being converted

    @property
    def keras_major(self) -> int:
        """Major Keras version that wrote the file (hard_sigmoid differs between 2 and 3)."""
        return self.model.keras_major

    def error(self, layer: Layer | str, message: str) -> ExportError:
        name = layer.name if isinstance(layer, Layer) else layer
        return ExportError(f"{self.model.path}: layer {name!r}: {message}")

    def weights(
        self, layer: Layer, shapes: Sequence[tuple[int, ...]], what: Sequence[str] | None = None
    ) -> list[np.ndarray]:
        """The layer's weights as float32, checked against the shapes its config implies."""
        got = layer.weights
        if len(got) != len(shapes):
            names = f" ({', '.join(what)})" if what else ""
            raise self.error(
                layer, f"expected {len(shapes)} weight arrays{names}, the file has {len(got)} (missing weight?)"
            )
        out = []
        for i, (w, shape) in enumerate(zip(got, shapes, strict=False)):
            if tuple(w.shape) != tuple(shape):
                label = what[i] if what else f"weight {i}"
                raise self.error(layer, f"{label} has shape {tuple(w.shape)}, the config implies {tuple(shape)}")
            out.append(np.asarray(w, dtype=np.float32))
        return out

    def token_ids(self, value: Value, vocabulary_size: int) -> None:
        """Records that `value`, when it is a model input, holds ids below `vocabulary_size`."""
        if value.name in self.model_input_names:
            known = self.vocabulary_sizes.get(value.name, vocabulary_size)
            self.vocabulary_sizes[value.name] = min(known, vocabulary_size)  # one input, several tables

    @property
    def model_input_names(self) -> set[str]:
        return {ref.layer for ref in self.model.inputs}

    def _state_owner(self, layer: str) -> str:
        """A layer called more than once (shared weights) has one set of states per call:
        `<layer>` for its first call, `<layer>@<n>` for call n."""
        return layer if self.call_index == 0 else f"{layer}@{self.call_index}"

    def state_input(self, layer: str, kind: str, shape: Sequence[int]) -> str:
        """Create graph input `state_in.<layer>.<kind>` of shape [batch, *shape]; returns its name."""
        if self.call_index > 0 and layer in self.stateful_layers:
            raise self.error(layer, "a stateful recurrent layer called more than once is not supported")
        layer = self._state_owner(layer)
        name = f"state_in.{layer}.{kind}"
        if any(s.input == name for s in self.states):
            raise self.error(layer, f"state {kind!r} declared twice")
        self.b.add_input(name, FLOAT, ["batch", *shape])
        self.b.scope.reserve(f"state_out.{layer}.{kind}")
        self.states.append(StateRecord(layer, kind, name, f"state_out.{layer}.{kind}", [-1, *shape]))
        return name

    def state_output(self, layer: str, kind: str, tensor: str) -> None:
        """Declare `tensor` as the final value of the state made by `state_input(layer, kind, ...)`."""
        layer = self._state_owner(layer)
        for s in self.states:
            if s.layer == layer and s.kind == kind:
                s.tensor = tensor
                return
        raise self.error(layer, f"state {kind!r} was never declared")
