"""The options of a recurrent layer call that every cell kind and graph form honours."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass
class RecurrentOptions:
    return_sequences: bool = False
    return_state: bool = False
    go_backwards: bool = False
    stateful: bool = False
    zero_output_for_mask: bool = False
    # Keras 0.2's rule (seqserve.keras.keras02): every step is computed and output; a masked step's
    # states are zeroed before the next step (Cell.onnx_mask_keras02).
    keras02_masking: bool = False
    # Return the sequence in reversed time order (Bidirectional re-aligns its backward layer with
    # the input this way; the fused form folds it into the Gather it already does).
    reverse_output: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RecurrentOptions:
        return cls(
            return_sequences=bool(cfg.get("return_sequences", False)),
            return_state=bool(cfg.get("return_state", False)),
            go_backwards=bool(cfg.get("go_backwards", False)),
            stateful=bool(cfg.get("stateful", False)),
            zero_output_for_mask=bool(cfg.get("zero_output_for_mask", False)),
            keras02_masking=bool(cfg.get("keras02_masking", False)),
        )
