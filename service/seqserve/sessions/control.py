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
# Errors and logs show this much of a client's id at most: enough to recognise it, never a flood.
SHOWN_ID_CHARACTERS = 32


@dataclass(frozen=True)
class SequenceControl:
    id: int | str
    start: bool = False
    end: bool = False
    step: int | None = None

    @classmethod
    def from_parameters(cls, parameters: dict[str, Any], max_id_length: int | None = None) -> SequenceControl | None:
        """None when the request belongs to no sequence; InvalidInput when the parameters are malformed
        or a string id is longer than `max_id_length` characters."""
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
        if isinstance(raw, str) and max_id_length is not None and len(raw) > max_id_length:
            raise InvalidInput(
                f"'{SEQUENCE_ID}' {shown_id(raw)} has {len(raw)} characters; at most {max_id_length} are accepted "
                "(max_sequence_id_length, SEQSERVE_MAX_SEQUENCE_ID_LENGTH)"
            )
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step < 1):
            raise InvalidInput(f"'{SEQUENCE_STEP}' must be a positive integer (1 for the first request), not {step!r}")
        return cls(raw, start, end, step)

    def describe(self) -> str:
        return f"sequence {shown_id(self.id)}" if isinstance(self.id, str) else f"sequence {self.id}"


def shown_id(value: str) -> str:
    """An id as errors and logs show it: quoted, and cut to a short prefix when it is long."""
    if len(value) <= SHOWN_ID_CHARACTERS:
        return repr(value)
    return f"{value[:SHOWN_ID_CHARACTERS]!r}... ({len(value)} characters)"


def _flag(parameters: dict[str, Any], name: str) -> bool:
    value = parameters.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"'{name}' must be a boolean, not {value!r}")
    return value
