"""The typed layer graph the Keras reader produces and the exporter consumes.

It is independent of the file format: a `.keras` zip and a legacy `.h5` file both become a
`KerasModel` whose layers carry their config and their weights as NumPy arrays in the order of
Keras' `layer.get_weights()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TensorRef:
    """Output `tensor` of call `node` of layer `layer` (Keras' `keras_history`)."""

    layer: str
    node: int = 0
    tensor: int = 0


@dataclass
class LayerCall:
    """One call of a layer in the model graph: its positional inputs and tensor-valued kwargs."""

    inputs: list[TensorRef]
    initial_state: list[TensorRef] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Keras 3 functional configs pass masks explicitly (computed by op layers such as NotEqual/Any).
    mask: TensorRef | None = None
    # The raw positional arguments (Keras 3), for op layers with constant operands: NotEqual(x, 0.0).
    args: list[Any] = field(default_factory=list)


@dataclass
class Layer:
    """A Keras layer: class name, config, weights (get_weights() order) and how it is called."""

    name: str
    class_name: str
    config: dict[str, Any]
    weights: list[np.ndarray] = field(default_factory=list)
    calls: list[LayerCall] = field(default_factory=list)
    # The nested model this layer was inlined from (its weights live under that model's group).
    parent: str | None = None
    # Keras 3's "module" of the class: op layers ("keras.src.ops.numpy") share class names with
    # layers (Concatenate), so converters of ops are looked up as "ops.<class>".
    module: str | None = None

    @property
    def kind(self) -> str:
        """The registry key: "ops.<class>" for Keras op layers, the class name otherwise."""
        if self.module and self.module.startswith("keras.src.ops"):
            return f"ops.{self.class_name}"
        if (
            self.module is None
            and "trainable" not in self.config
            and not self.class_name.startswith("_")
            and self.class_name != "InputLayer"
            and self.config.get("name") == self.name
        ):
            # Keras 3's legacy .h5 configs drop "module"; an op's config has no "trainable" (every layer's has).
            return f"ops.{self.class_name}"
        return self.class_name

    @property
    def n_params(self) -> int:
        return int(sum(w.size for w in self.weights))


# Pseudo-classes the reader creates when it inlines a nested model: `_Alias` stands for the nested
# model's InputLayer (passes its one input through), `_Outputs` for the nested model itself (its
# call outputs are the nested model's outputs, in order).
ALIAS = "_Alias"
OUTPUTS = "_Outputs"


@dataclass
class KerasModel:
    """A whole model: layers in topological order, model inputs and outputs in Keras' order."""

    path: str
    format: str  # "keras3" | "h5"
    keras_version: str
    backend: str
    name: str
    layers: list[Layer]
    inputs: list[TensorRef]
    outputs: list[TensorRef]

    @property
    def keras_major(self) -> int:
        try:
            return int(self.keras_version.split(".")[0])
        except ValueError:
            return 3 if self.format == "keras3" else 2

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    @property
    def n_params(self) -> int:
        return sum(layer.n_params for layer in self.layers)
