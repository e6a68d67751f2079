"""A recurrent cell kind: what one Keras cell computes per timestep, and how its weights are laid out.

Each kind is one class (one module in this package) that owns everything kind-specific:

- its Keras weights (`from_keras`: which arrays, which shapes, gate order as Keras stores them);
- its state kinds (`h`, or `h` and `c`) and gate count;
- its step, written twice and independently: in NumPy (`numpy_step`, for `seqserve.reference`,
  the oracle the export's parity is measured against) and as ONNX nodes (`onnx_step`, the body of
  the exporter's Scan form);
- which fused ONNX op computes it exactly, on which target (`fused`).

Everything that is not per kind (masks, go_backwards, stacking, Bidirectional, the graph forms)
lives in the exporter and the reference, once for every kind. Activations come in as functions,
since each side has its own (ONNX nodes, NumPy), with Keras' formulas per version.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from seqserve.keras.activations import activation_name

# (shapes, names) -> the arrays, checked against the shapes (the exporter names the file and layer
# when they do not match) and cast to the dtype the caller computes in.
WeightReader = Callable[[Sequence[tuple[int, ...]], Sequence[str]], list[np.ndarray]]
Activation = Callable[[Any], Any]


class StepGraph(Protocol):
    """The part of the exporter's graph builder a step uses: nodes here, constants in the main graph."""

    root: StepGraph

    def op(self, op_type: str, inputs: Sequence[str], base: str | None = None, n_out: int = 1, **attrs: Any) -> Any: ...

    def const(self, value: Any, base: str = "const", dtype: Any = np.float32) -> str: ...


class Target(Protocol):
    """What an export target can run fused (`seqserve.export.target.Target`)."""

    @property
    def fuses_gru_reset_before(self) -> bool: ...


@dataclass(frozen=True)
class FusedOp:
    """An ONNX recurrent op that computes a cell exactly: its type, W, R, B inputs and attributes."""

    op_type: str
    w: np.ndarray
    r: np.ndarray
    b: np.ndarray
    attrs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class Cell(ABC):
    """One cell with Keras-layout weights: kernel (input_dim, gates*units), recurrent_kernel
    (units, gates*units), columns in Keras' gate order."""

    units: int
    kernel: np.ndarray
    recurrent_kernel: np.ndarray
    bias: np.ndarray | None
    # Keras names of the activations (None: not a built-in activation).
    activation: str | None
    recurrent_activation: str | None

    gates: ClassVar[int]
    state_kinds: ClassVar[tuple[str, ...]]
    has_recurrent_activation: ClassVar[bool] = True
    # The one Keras major version that has this kind (Keras 0.2's SimpleDeepRNN and JZS: 0), or None.
    only_keras_major: ClassVar[int | None] = None

    @property
    def state_widths(self) -> tuple[int, ...]:
        """The width of each state kind (`units`, unless the kind says otherwise)."""
        return tuple(self.units for _ in self.state_kinds)

    @classmethod
    def from_keras(
        cls, class_name: str, cfg: Mapping[str, Any], keras_major: int, input_dim: int, read: WeightReader
    ) -> Cell:
        """The cell of a layer or cell config (LSTM, LSTMCell, CuDNNLSTM...) and its weights."""
        units = int(cfg["units"])
        cudnn = class_name.startswith("CuDNN")  # CuDNN layers: always a bias, fixed activations
        options = cls.options(cfg, keras_major, cudnn)
        shapes = [(input_dim, cls.gates * units), (units, cls.gates * units)]
        if cudnn or bool(cfg.get("use_bias", True)):
            shapes.append(cls.bias_shape(units, **options))
        weights = read(shapes, ["kernel", "recurrent_kernel", "bias"][: len(shapes)])
        if cudnn:
            act, rec = "tanh", "sigmoid"
        else:
            act = activation_name(cfg.get("activation", "tanh"))
            rec = activation_name(cfg.get("recurrent_activation", "sigmoid")) if cls.has_recurrent_activation else None
        bias = weights[2] if len(weights) > 2 else None
        return cls(units, weights[0], weights[1], bias, act, rec, **options)

    @staticmethod
    def weight_count(class_name: str, cfg: Mapping[str, Any]) -> int:
        """How many of a layer's weight arrays this cell takes (stacked cells share one list)."""
        return 3 if cfg.get("use_bias", True) or class_name.startswith("CuDNN") else 2

    @classmethod
    def options(cls, cfg: Mapping[str, Any], keras_major: int, cudnn: bool) -> dict[str, Any]:
        """The kind's own options from the config (GRU: reset_after)."""
        return {}

    @classmethod
    def bias_shape(cls, units: int, **options: Any) -> tuple[int, ...]:
        return (cls.gates * units,)

    def input_bias(self) -> np.ndarray | None:
        """The bias added to the input projection (x @ kernel), hoisted out of the step with it."""
        return self.bias

    @abstractmethod
    def numpy_step(self, x: np.ndarray, states: list[np.ndarray], act: Activation, rec: Activation) -> list[np.ndarray]:
        """One timestep on raw input x [batch, input_dim]; returns the new states (output first)."""

    @abstractmethod
    def onnx_step(
        self, g: StepGraph, name: str, xp: str, states: list[str], act: Activation, rec: Activation
    ) -> list[str]:
        """One timestep as nodes of a Scan body; `xp` is the input projection, `input_bias` included."""

    def numpy_mask_keras02(self, states: list[np.ndarray], m: np.ndarray) -> list[np.ndarray]:
        """Keras 0.2's masking rule: the states a step leaves, as the next step starts from them,
        given the step's mask m [batch, 1] (1.0 or 0.0): a masked step's states are zeroed."""
        return [s * m for s in states]

    def onnx_mask_keras02(self, g: StepGraph, name: str, states: list[str], m: str) -> list[str]:
        """`numpy_mask_keras02` as nodes of a Scan body (m: float [batch, 1])."""
        return [g.op("Mul", [s, m], f"{name}_masked") for s in states]

    def fused(self, target: Target) -> FusedOp | None:
        """The ONNX op computing this cell exactly on `target`, or None (then the Scan form runs it)."""
        return None

    def default_activations(self) -> bool:
        """The activations the fused ONNX ops compute exactly as Keras does."""
        return self.activation == "tanh" and self.recurrent_activation == "sigmoid"
