"""JZS1, JZS2, JZS3 (Keras 0.2): the three recurrent architectures Jozefowicz, Zaremba and Sutskever
(2015) found best among GRU mutations, as Keras 0.2 wrote them (tests/fixtures/old_keras/README.md).
Gates z, r and a candidate hh; unlike GRU, z weights the new value: h' = hh*z + h*(1-z).

- JZS1: z = inner(x W_z + b_z); r = inner(x W_r + b_r + h U_r);
  hh = act(tanh(x Pmat) + b_h + (r*h) U_h)
- JZS2: z = inner(x W_z + b_z + h U_z); r = inner(x Pmat + b_r + h U_r); hh = act(x W_h + b_h + (r*h) U_h)
- JZS3: z = inner(x W_z + b_z + tanh(h) U_z); r = inner(x W_r + b_r + h U_r); hh as JZS2

The weights are read as Keras 0.2 lists them; the cell holds them as kernel [z | r | hh inputs]
(input_dim, 3u), input bias (3u) and recurrent_kernel [U_z | U_r | U_h] (u, 3u; JZS1 has no U_z:
zeros, never used). JZS1's b_h is added after the tanh, so it is kept apart (`hidden_bias`).
No ONNX op computes these: they run in the Scan form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from seqserve.cells.base import Activation, Cell, StepGraph, WeightReader
from seqserve.keras.activations import activation_name


@dataclass
class Jzs(Cell):
    hidden_bias: np.ndarray | None = None

    gates: ClassVar[int] = 3
    state_kinds: ClassVar[tuple[str, ...]] = ("h",)
    only_keras_major: ClassVar[int | None] = 0
    # Keras 0.2's parameter list of the variant, in the file's order.
    params: ClassVar[tuple[str, ...]]

    @classmethod
    def from_keras(
        cls, class_name: str, cfg: Mapping[str, Any], keras_major: int, input_dim: int, read: WeightReader
    ) -> Cell:
        u = int(cfg["units"])
        shapes = [(u,) if p.startswith("b_") else (u, u) if p.startswith("U_") else (input_dim, u) for p in cls.params]
        w = dict(zip(cls.params, read(shapes, cls.params), strict=True))
        zeros = np.zeros_like(w["b_z"])
        if cls is Jzs1:
            kernel = [w["W_z"], w["W_r"], w["Pmat"]]
            bias = [w["b_z"], w["b_r"], zeros]
            recurrent = [np.zeros_like(w["U_r"]), w["U_r"], w["U_h"]]
        else:
            kernel = [w["W_z"], w["Pmat"] if cls is Jzs2 else w["W_r"], w["W_h"]]
            bias = [w["b_z"], w["b_r"], w["b_h"]]
            recurrent = [w["U_z"], w["U_r"], w["U_h"]]
        act = cfg.get("activation", "tanh")
        rec = cfg.get("recurrent_activation", "sigmoid")
        return cls(
            u,
            np.concatenate(kernel, axis=1),
            np.concatenate(recurrent, axis=1),
            np.concatenate(bias),
            activation_name(act),
            activation_name(rec),
            hidden_bias=w["b_h"] if cls is Jzs1 else None,
        )

    @classmethod
    def weight_count(cls, class_name: str, cfg: Mapping[str, Any]) -> int:
        return len(cls.params)

    def numpy_step(self, x: np.ndarray, states: list[np.ndarray], act: Activation, rec: Activation) -> list[np.ndarray]:
        u, h, rk = self.units, states[0], self.recurrent_kernel
        xp = x @ self.kernel + self.bias
        xz, xr, xh = xp[:, :u], xp[:, u : 2 * u], xp[:, 2 * u :]
        # JZS1's z sees only x; JZS3's sees tanh(h)
        hz = 0.0 if isinstance(self, Jzs1) else (np.tanh(h) if isinstance(self, Jzs3) else h) @ rk[:, :u]
        z = rec(xz + hz)
        r = rec(xr + h @ rk[:, u : 2 * u])
        if isinstance(self, Jzs1):
            assert self.hidden_bias is not None
            xh = np.tanh(xh) + self.hidden_bias
        hh = act(xh + (r * h) @ rk[:, 2 * u :])
        return [hh * z + h * (1 - z)]

    def onnx_step(
        self, g: StepGraph, name: str, xp: str, states: list[str], act: Activation, rec: Activation
    ) -> list[str]:
        u, h, root, rk = self.units, states[0], g.root, self.recurrent_kernel
        xz, xr, xh = g.op("Split", [xp], f"{name}_xgates", n_out=3, axis=1)
        if isinstance(self, Jzs2):  # z and r both read h: one MatMul
            hzr = g.op("MatMul", [h, root.const(rk[:, : 2 * u], f"{name}_rkernel_zr")])
            hz, hr = g.op("Split", [hzr], f"{name}_hgates", n_out=2, axis=1)
            z = rec(g.op("Add", [xz, hz]))
        else:
            hr = g.op("MatMul", [h, root.const(rk[:, u : 2 * u], f"{name}_rkernel_r")])
            if isinstance(self, Jzs1):
                z = rec(xz)
            else:
                th = g.op("Tanh", [h])
                z = rec(g.op("Add", [xz, g.op("MatMul", [th, root.const(rk[:, :u], f"{name}_rkernel_z")])]))
        r = rec(g.op("Add", [xr, hr]))
        if isinstance(self, Jzs1):
            assert self.hidden_bias is not None
            xh = g.op("Add", [g.op("Tanh", [xh]), root.const(self.hidden_bias, f"{name}_hbias")])
        rh = g.op("MatMul", [g.op("Mul", [r, h]), root.const(rk[:, 2 * u :], f"{name}_rkernel_h")])
        hh = act(g.op("Add", [xh, rh]))
        one = root.const(1.0, "one")
        h_new = g.op("Add", [g.op("Mul", [hh, z]), g.op("Mul", [h, g.op("Sub", [one, z])])], f"{name}_h")
        return [h_new]


class Jzs1(Jzs):
    params: ClassVar[tuple[str, ...]] = ("W_z", "b_z", "W_r", "U_r", "b_r", "U_h", "b_h", "Pmat")


class Jzs2(Jzs):
    params: ClassVar[tuple[str, ...]] = ("W_z", "U_z", "b_z", "U_r", "b_r", "W_h", "U_h", "b_h", "Pmat")


class Jzs3(Jzs):
    params: ClassVar[tuple[str, ...]] = ("W_z", "U_z", "b_z", "W_r", "U_r", "b_r", "W_h", "U_h", "b_h")
