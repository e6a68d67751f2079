"""The execution provider an export is made for, and which graph forms it really runs.

ONNX Runtime's CUDA EP silently moves some recurrent nodes to the CPU (`RNNNeedFallbackToCPU` in
onnxruntime's cuda_execution_provider.cc: non-default activations, activation_alpha/beta, clip,
input_forget, or a GRU with linear_before_reset=0). A target says what may be emitted for it; the
cell kinds (`seqserve.cells`) ask it before choosing a fused op.
"""

from __future__ import annotations

from dataclasses import dataclass

from seqserve.errors import ExportError


@dataclass(frozen=True)
class Target:
    name: str
    # The GRU op with linear_before_reset=0 (Keras 1/2's reset_after=False) runs where it is placed.
    fuses_gru_reset_before: bool

    @classmethod
    def named(cls, name: str) -> Target:
        try:
            return TARGETS[name]
        except KeyError:
            raise ExportError(f"unknown target {name!r}: expected {' or '.join(map(repr, TARGETS))}") from None


CPU = Target("cpu", fuses_gru_reset_before=True)
CUDA = Target("cuda", fuses_gru_reset_before=False)
TARGETS = {t.name: t for t in (CPU, CUDA)}
