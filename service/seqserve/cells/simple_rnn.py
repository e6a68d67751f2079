"""SimpleRNN (Keras SimpleRNN, SimpleRNNCell): h = activation(x W + h U + b).

No fused form: the ONNX `RNN` op is slower than the Scan form here (DESIGN.md's table: 6.82 ms
against 1.59 ms, its Tanh dominates)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from seqserve.cells.base import Activation, Cell, StepGraph


class SimpleRnn(Cell):
    gates: ClassVar[int] = 1
    state_kinds: ClassVar[tuple[str, ...]] = ("h",)
    has_recurrent_activation: ClassVar[bool] = False

    def numpy_step(self, x: np.ndarray, states: list[np.ndarray], act: Activation, rec: Activation) -> list[np.ndarray]:
        z = x @ self.kernel + (self.bias if self.bias is not None else 0) + states[0] @ self.recurrent_kernel
        return [act(z)]

    def onnx_step(
        self, g: StepGraph, name: str, xp: str, states: list[str], act: Activation, rec: Activation
    ) -> list[str]:
        rk = g.root.const(self.recurrent_kernel, f"{name}_rkernel")
        return [act(g.op("Add", [xp, g.op("MatMul", [states[0], rk])]))]
