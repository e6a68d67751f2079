"""Triton's sequence contract, read from a request's parameters.

`sequence_id` (uint64 or string; 0 or "" means "no sequence"), `sequence_start`, `sequence_end`, as
`tritonclient` sends them, plus our own optional `sequence_step`: the 1-based number of this request
within its sequence, which makes a retried step safe to send again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from seqserve.errors import InvalidInput

SEQUENCE_ID = "sequence_id"
SEQUENCE_START = "sequence_start"
SEQUENCE_END = "sequence_end"
SEQUENCE_STEP = "sequence_step"


@dataclass(frozen=True)
class SequenceControl:
    id: int | str
    start: bool = False
    end: bool = False
    step: int | None = None

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any]) -> SequenceControl | None:
        """None when the request belongs to no sequence; InvalidInput when the parameters are malformed."""
        raw = parameters.get(SEQUENCE_ID)
        start, end = _flag(parameters, SEQUENCE_START), _flag(parameters, SEQUENCE_END)
        step = parameters.get(SEQUENCE_STEP)
        if raw is None or raw == 0 or raw == "":
            given = [k for k in (SEQUENCE_START, SEQUENCE_END, SEQUENCE_STEP) if parameters.get(k)]
            if given:
                raise InvalidInput(f"parameter(s) {', '.join(given)} need a non-zero '{SEQUENCE_ID}'")
            return None
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise InvalidInput(f"'{SEQUENCE_ID}' must be an unsigned integer or a string, not {type(raw).__name__}")
        if isinstance(raw, int) and not 0 < raw < 2**64:
            raise InvalidInput(f"'{SEQUENCE_ID}' {raw} is outside the uint64 range")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 1):
            raise InvalidInput(f"'{SEQUENCE_STEP}' must be a positive integer (1 for the first request), not {step!r}")
        return cls(raw, start, end, step)

    def describe(self) -> str:
        return f"sequence {self.id!r}" if isinstance(self.id, str) else f"sequence {self.id}"


def _flag(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"'{name}' must be a boolean, not {value!r}")
    return value
