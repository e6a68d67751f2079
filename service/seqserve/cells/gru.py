"""GRU (Keras GRU, GRUCell, CuDNNGRU, GRUV1): gates z, r, h; `reset_after` applies the reset gate
after the recurrent matmul (Keras 3's default and CuDNN's) or before it (Keras 1/2's default)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from seqserve.cells.base import Activation, Cell, FusedOp, StepGraph, Target


@dataclass
class Gru(Cell):
    reset_after: bool = True

    gates: ClassVar[int] = 3
    state_kinds: ClassVar[tuple[str, ...]] = ("h",)

    @classmethod
    def options(cls, cfg: Mapping[str, Any], keras_major: int, cudnn: bool) -> dict[str, Any]:
        return {"reset_after": cudnn or bool(cfg.get("reset_after", keras_major >= 3))}

    @classmethod
    def bias_shape(cls, units: int, **options: Any) -> tuple[int, ...]:
        # reset_after keeps an input bias and a recurrent bias.
        return (2, 3 * units) if options["reset_after"] else (3 * units,)

    def input_bias(self) -> np.ndarray | None:
        if self.bias is None:
            return None
        return self.bias[0] if self.reset_after else self.bias

    def numpy_step(self, x: np.ndarray, states: list[np.ndarray], act: Activation, rec: Activation) -> list[np.ndarray]:
        u, h, rk = self.units, states[0], self.recurrent_kernel
        if self.bias is None:
            bx, bh = 0.0, 0.0
        elif self.reset_after:
            bx, bh = self.bias[0], self.bias[1]
        else:
            bx, bh = self.bias, 0.0
        xz = x @ self.kernel + bx
        if self.reset_after:
            hz = h @ rk + bh
            z = rec(xz[:, :u] + hz[:, :u])
            r = rec(xz[:, u : 2 * u] + hz[:, u : 2 * u])
            hh = act(xz[:, 2 * u :] + r * hz[:, 2 * u :])
        else:
            z = rec(xz[:, :u] + h @ rk[:, :u])
            r = rec(xz[:, u : 2 * u] + h @ rk[:, u : 2 * u])
            hh = act(xz[:, 2 * u :] + (r * h) @ rk[:, 2 * u :])
        return [z * h + (1 - z) * hh]

    def onnx_step(
        self, g: StepGraph, name: str, xp: str, states: list[str], act: Activation, rec: Activation
    ) -> list[str]:
        u, h, root = self.units, states[0], g.root
        xz, xr, xh = g.op("Split", [xp], f"{name}_xgates", n_out=3, axis=1)
        one = root.const(1.0, "one")
        if self.reset_after:
            hr = g.op("MatMul", [h, root.const(self.recurrent_kernel, f"{name}_rkernel")])
            if self.bias is not None:
                hr = g.op("Add", [hr, root.const(self.bias[1], f"{name}_rbias")])
            hz, hrr, hh = g.op("Split", [hr], f"{name}_hgates", n_out=3, axis=1)
            z = rec(g.op("Add", [xz, hz]))
            r = rec(g.op("Add", [xr, hrr]))
            cand = act(g.op("Add", [xh, g.op("Mul", [r, hh])]))
        else:
            rk = self.recurrent_kernel
            hzr = g.op("MatMul", [h, root.const(rk[:, : 2 * u], f"{name}_rkernel_zr")])
            hz, hrr = g.op("Split", [hzr], f"{name}_hgates", n_out=2, axis=1)
            z = rec(g.op("Add", [xz, hz]))
            r = rec(g.op("Add", [xr, hrr]))
            rh = g.op("MatMul", [g.op("Mul", [r, h]), root.const(rk[:, 2 * u :], f"{name}_rkernel_h")])
            cand = act(g.op("Add", [xh, rh]))
        h_new = g.op("Add", [g.op("Mul", [z, h]), g.op("Mul", [g.op("Sub", [one, z]), cand])], f"{name}_h")
        return [h_new]

    def fused(self, target: Target) -> FusedOp | None:
        """ONNX GRU (gate order z, r, h as in Keras); reset_after is linear_before_reset=1."""
        if not self.default_activations() or not (self.reset_after or target.fuses_gru_reset_before):
            return None
        u = self.units
        if self.bias is None:
            b = np.zeros((1, 6 * u), np.float32)
        elif self.reset_after:
            b = np.concatenate([self.bias[0], self.bias[1]])[None]
        else:
            b = np.concatenate([self.bias, np.zeros_like(self.bias)])[None]
        attrs = {"linear_before_reset": int(self.reset_after)}
        return FusedOp("GRU", self.kernel.T[None], self.recurrent_kernel.T[None], b, attrs)
