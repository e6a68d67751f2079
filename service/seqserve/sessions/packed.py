"""A session's states packed into one array: what an idle session keeps in memory.

A record holds every recurrent state of its session (h and c of each layer, ...). Kept as separate
arrays, each costs a NumPy header beside its data; packed into one buffer, a session pays for one,
and the copy that packing makes is the one that detaches the states from the batch they were
computed in (a view would keep the whole batch's arrays alive). Readers see a read-only mapping of
name -> array, as before; the arrays are views made on access.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from functools import lru_cache
from types import MappingProxyType

import numpy as np

NO_STATES: Mapping[str, np.ndarray] = MappingProxyType({})

# name -> (start, end, shape) of each state in the buffer, in elements.
_Layout = Mapping[str, tuple[int, int, tuple[int, ...]]]


@lru_cache(maxsize=1024)  # one layout per (model, batch size) in practice, shared by its sessions
def _layout(names: tuple[str, ...], shapes: tuple[tuple[int, ...], ...]) -> _Layout:
    entries, offset = {}, 0
    for name, shape in zip(names, shapes, strict=True):
        size = math.prod(shape)
        entries[name] = (offset, offset + size, shape)
        offset += size
    return MappingProxyType(entries)


# (id of a layout, dtype) -> (the layout, kept alive so that its id is not reused; its description)
_DESCRIPTIONS: dict[tuple[int, str], tuple[_Layout, bytes]] = {}


def _description(layout: _Layout, dtype: str) -> bytes:
    """The layout and dtype as JSON, what a stored record carries to unpack the buffer: made once
    per layout (layouts are shared by every session of a model and batch size)."""
    key = (id(layout), dtype)
    found = _DESCRIPTIONS.get(key)
    if found is None:
        if len(_DESCRIPTIONS) >= 1024:
            _DESCRIPTIONS.clear()
        arrays = [[name, list(shape)] for name, (_, _, shape) in layout.items()]
        found = _DESCRIPTIONS[key] = (layout, json.dumps({"dtype": dtype, "arrays": arrays}).encode())
    return found[1]


class PackedStates(Mapping[str, np.ndarray]):
    __slots__ = ("_buffer", "_layout")

    def __init__(self, buffer: np.ndarray, layout: _Layout) -> None:
        self._buffer, self._layout = buffer, layout

    def serialized(self) -> tuple[bytes, bytes]:
        """(description, raw bytes) of the buffer, as `seqserve.sessions.codec` stores them."""
        return _description(self._layout, self._buffer.dtype.str), self._buffer.tobytes()

    def __getitem__(self, name: str) -> np.ndarray:
        start, end, shape = self._layout[name]
        return self._buffer[start:end].reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._layout)

    def __len__(self) -> int:
        return len(self._layout)

    @property
    def nbytes(self) -> int:
        return int(self._buffer.nbytes)


def pack(states: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    """The states, copied into one buffer (or, if their dtypes differ, each copied on its own)."""
    if not states:
        return NO_STATES
    arrays = list(states.values())
    dtype = arrays[0].dtype
    if any(a.dtype != dtype for a in arrays) or dtype.hasobject:
        return MappingProxyType({name: np.array(a) for name, a in states.items()})
    buffer = np.concatenate([a.reshape(-1) for a in arrays])
    buffer.flags.writeable = False  # a record is never changed in place; its views inherit this
    return PackedStates(buffer, _layout(tuple(states), tuple([a.shape for a in arrays])))


def nbytes(states: Mapping[str, np.ndarray]) -> int:
    if isinstance(states, PackedStates):
        return states.nbytes
    return sum(a.nbytes for a in states.values())
