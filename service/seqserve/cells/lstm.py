"""LSTM (Keras LSTM, LSTMCell, CuDNNLSTM, LSTMV1): gates i, f, c, o in Keras' column order."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from seqserve.cells.base import Activation, Cell, FusedOp, StepGraph, Target


class Lstm(Cell):
    gates: ClassVar[int] = 4
    state_kinds: ClassVar[tuple[str, ...]] = ("h", "c")

    def numpy_step(self, x: np.ndarray, states: list[np.ndarray], act: Activation, rec: Activation) -> list[np.ndarray]:
        u, h = self.units, states[0]
        z = x @ self.kernel + h @ self.recurrent_kernel + (self.bias if self.bias is not None else 0)
        i, f, g, o = (z[:, k * u : (k + 1) * u] for k in range(4))
        c = rec(f) * states[1] + rec(i) * act(g)
        return [rec(o) * act(c), c]

    def onnx_step(
        self, g: StepGraph, name: str, xp: str, states: list[str], act: Activation, rec: Activation
    ) -> list[str]:
        h = states[0]
        z = g.op("Add", [xp, g.op("MatMul", [h, g.root.const(self.recurrent_kernel, f"{name}_rkernel")])])
        i, f, gate, o = g.op("Split", [z], f"{name}_gates", n_out=4, axis=1)
        c = g.op("Add", [g.op("Mul", [rec(f), states[1]]), g.op("Mul", [rec(i), act(gate)])], f"{name}_c")
        h_new = g.op("Mul", [rec(o), act(c)], f"{name}_h")
        return [h_new, c]

    def fused(self, target: Target) -> FusedOp | None:
        """ONNX LSTM, gates reordered to i, o, f, c; the recurrence bias is zeros (Keras has one bias)."""
        if not self.default_activations():
            return None
        u = self.units
        wb = _onnx_gate_order(self.bias, u) if self.bias is not None else np.zeros(4 * u, np.float32)
        return FusedOp(
            "LSTM",
            _onnx_gate_order(self.kernel, u).T[None],
            _onnx_gate_order(self.recurrent_kernel, u).T[None],
            np.concatenate([wb, np.zeros_like(wb)])[None],
        )


def _onnx_gate_order(m: np.ndarray, units: int) -> np.ndarray:
    """Keras gate blocks i, f, c, o (last axis) -> ONNX i, o, f, c."""
    i, f, c, o = (m[..., k * units : (k + 1) * units] for k in range(4))
    return np.concatenate([i, o, f, c], axis=-1)
