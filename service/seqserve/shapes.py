"""Limits on a tensor's declared shape, checked before anything is allocated from it.

Shared by every decoder (REST JSON and binary data, gRPC raw and typed contents), so a shape means
the same thing, and is refused with the same words, whichever way it arrives.
"""

from __future__ import annotations

from collections.abc import Sequence

from seqserve.errors import InvalidInput

# NumPy's own limit (and so ONNX Runtime's, through it): a 65-dimension array cannot exist.
MAX_DIMENSIONS = 64
# Elements a shape may describe, zero dimensions aside: NumPy refuses even an *empty* array whose
# other dimensions multiply past its byte-size limit (2**63 bytes; our widest element is 8 bytes).
MAX_ELEMENTS = 2**60


def check_shape(name: str, shape: Sequence[int], what: str = "input") -> None:
    """Refuses a shape no tensor can have: too many dimensions, a negative one, or too many elements."""
    if len(shape) > MAX_DIMENSIONS:
        raise InvalidInput(
            f"{what} '{name}' has a shape of {len(shape)} dimensions; at most {MAX_DIMENSIONS} are supported"
        )
    count = 1
    for size in shape:
        if size < 0:
            raise InvalidInput(
                f"{what} '{name}' has a negative dimension in its shape {list(shape)}; dimensions must not be negative"
            )
        count *= size or 1
        if count > MAX_ELEMENTS:
            raise InvalidInput(f"{what} '{name}' has shape {list(shape)}, which describes more than 2**60 elements")
