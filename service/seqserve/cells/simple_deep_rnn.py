"""SimpleDeepRNN (Keras 0.2): a SimpleRNN that looks `depth` outputs back,
h_t = act(x_t W + b + sum_{i=1..depth} inner(h_{t-i} U_i)), where a term reaching before the start
of the sequence is left out (not inner(0 U_i), which is inner(0) = 0.5 for hard_sigmoid).

Its states are those `depth` previous outputs, so a stateful server carries all of them: `h` (the
last output, as for every cell), `h_lag1` .. `h_lag{depth-1}` (the outputs 1 .. depth-1 steps
before it), and `valid` [batch, depth]: column i-1 is 1 where the output i steps back exists, 0
before the sequence starts. Zero states are a fresh sequence, as Keras' predict starts one.
Weights as Keras 0.2 lists them: W (input_dim, u), U_1 .. U_depth (u, u), b (u); the cell stacks
the U_i as recurrent_kernel (depth*u, u). No ONNX op computes it: the Scan form runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from seqserve.cells.base import Activation, Cell, StepGraph, WeightReader
from seqserve.keras.activations import activation_name


@dataclass
class SimpleDeepRnn(Cell):
    depth: int = 1

    gates: ClassVar[int] = 1
    only_keras_major: ClassVar[int | None] = 0

    @property  # type: ignore[override]
    def state_kinds(self) -> tuple[str, ...]:
        return ("h", *(f"h_lag{i}" for i in range(1, self.depth)), "valid")

    @property
    def state_widths(self) -> tuple[int, ...]:
        return (*(self.units for _ in range(self.depth)), self.depth)

    @classmethod
    def from_keras(
        cls, class_name: str, cfg: Mapping[str, Any], keras_major: int, input_dim: int, read: WeightReader
    ) -> Cell:
        u, depth = int(cfg["units"]), int(cfg["depth"])
        names = ["W", *(f"U_{i}" for i in range(1, depth + 1)), "b"]
        w = read([(input_dim, u), *[(u, u)] * depth, (u,)], names)
        return cls(
            u,
            w[0],
            np.concatenate(w[1:-1], axis=0),
            w[-1],
            activation_name(cfg.get("activation", "sigmoid")),
            activation_name(cfg.get("recurrent_activation", "hard_sigmoid")),
            depth=depth,
        )

    @staticmethod
    def weight_count(class_name: str, cfg: Mapping[str, Any]) -> int:
        return int(cfg["depth"]) + 2

    def _lookback(self, i: int) -> np.ndarray:
        """U_{i+1}: the matrix applied to the output i+1 steps back."""
        return self.recurrent_kernel[i * self.units : (i + 1) * self.units]

    def numpy_step(self, x: np.ndarray, states: list[np.ndarray], act: Activation, rec: Activation) -> list[np.ndarray]:
        outputs, valid = states[:-1], states[-1]
        z = x @ self.kernel + (self.bias if self.bias is not None else 0)
        for i, h in enumerate(outputs):
            z = z + rec(h @ self._lookback(i)) * valid[:, i : i + 1]
        shifted = np.concatenate([np.ones_like(valid[:, :1]), valid[:, :-1]], axis=1)
        return [act(z), *outputs[:-1], shifted]

    def numpy_mask_keras02(self, states: list[np.ndarray], m: np.ndarray) -> list[np.ndarray]:
        # Each lookback term is masked by its own step's mask: only the newest `valid` column.
        keep = 1 - (1 - m) * np.eye(1, self.depth)
        return [*states[:-1], states[-1] * keep]

    def onnx_mask_keras02(self, g: StepGraph, name: str, states: list[str], m: str) -> list[str]:
        root = g.root
        dropped = g.op("Mul", [g.op("Sub", [root.const(1.0, "one"), m]), root.const(np.eye(1, self.depth)[0], "first")])
        keep = g.op("Sub", [root.const(1.0, "one"), dropped])
        return [*states[:-1], g.op("Mul", [states[-1], keep], f"{name}_valid_masked")]

    def onnx_step(
        self, g: StepGraph, name: str, xp: str, states: list[str], act: Activation, rec: Activation
    ) -> list[str]:
        outputs, valid, root = states[:-1], states[-1], g.root
        d = self.depth
        flags = g.op("Split", [valid], f"{name}_valid", n_out=d, axis=1) if d > 1 else [valid]
        z = xp
        for i, h in enumerate(outputs):
            term = rec(g.op("MatMul", [h, root.const(self._lookback(i), f"{name}_rkernel{i + 1}")]))
            z = g.op("Add", [z, g.op("Mul", [term, flags[i]])])
        # The window moves on: this step's output now exists (column 0), the oldest drops out.
        ones = g.op("Add", [g.op("Mul", [flags[0], root.const(0.0, "zero")]), root.const(1.0, "one")])
        shifted = g.op("Concat", [ones, *flags[:-1]], f"{name}_valid_next", axis=1) if d > 1 else ones
        return [act(z), *outputs[:-1], shifted]
