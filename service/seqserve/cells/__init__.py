"""Recurrent cell kinds: what each Keras recurrent cell computes, one class per kind.

`CELLS` maps every Keras class name that is one cell (a layer such as LSTM, or a cell such as
LSTMCell inside an `RNN`) to its kind. A new kind is a new module here and a line in `CELLS`; the
exporter and the NumPy reference take it from there (`seqserve.cells.base` says what a kind owns).
`layer_cells` reads the cells of a recurrent layer's config the same way for both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from seqserve.cells.base import Cell, FusedOp, StepGraph
from seqserve.cells.gru import Gru
from seqserve.cells.jzs import Jzs1, Jzs2, Jzs3
from seqserve.cells.lstm import Lstm
from seqserve.cells.simple_deep_rnn import SimpleDeepRnn
from seqserve.cells.simple_rnn import SimpleRnn

CELLS: dict[str, type[Cell]] = {
    **dict.fromkeys(["LSTM", "LSTMCell", "CuDNNLSTM", "LSTMV1"], Lstm),
    **dict.fromkeys(["GRU", "GRUCell", "CuDNNGRU", "GRUV1"], Gru),
    **dict.fromkeys(["SimpleRNN", "SimpleRNNCell"], SimpleRnn),
    # Keras 0.2 only (seqserve.keras.keras02)
    "SimpleDeepRNN": SimpleDeepRnn,
    "JZS1": Jzs1,
    "JZS2": Jzs2,
    "JZS3": Jzs3,
}

# Layer classes that are one cell run over time (the rest of CELLS are cells for an `RNN`).
CELL_LAYERS = frozenset(name for name in CELLS if not name.endswith("Cell"))

# (the cell's slice of the layer's weights, shapes, names) -> the arrays, checked and cast.
CellWeights = Callable[[list[np.ndarray], Sequence[tuple[int, ...]], Sequence[str]], list[np.ndarray]]

__all__ = [
    "CELLS",
    "CELL_LAYERS",
    "Cell",
    "CellWeights",
    "FusedOp",
    "StepGraph",
    "UnknownCell",
    "layer_cells",
    "state_names",
]


class UnknownCell(Exception):
    """A recurrent layer config whose cells are not a known kind (custom cells carry code)."""


def cell_configs(class_name: str, cfg: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(cell class, cell config) of each cell of a recurrent layer config, in stacking order."""
    if class_name in CELL_LAYERS:
        return [(class_name, cfg)]
    if class_name != "RNN":
        raise UnknownCell(f"{class_name} is not a recurrent layer this exporter knows")
    spec = cfg.get("cell")
    if isinstance(spec, list):
        cells = spec
    elif isinstance(spec, dict) and spec.get("class_name") == "StackedRNNCells":
        cells = (spec.get("config") or {}).get("cells") or []
    elif isinstance(spec, dict):
        cells = [spec]
    else:
        raise UnknownCell("RNN config has no cell")
    out = []
    for c in cells:
        cls = str(c.get("class_name"))
        if cls not in CELLS or not cls.endswith("Cell"):
            raise UnknownCell(f"unsupported or custom RNN cell class {cls!r}")
        out.append((cls, dict(c.get("config") or {})))
    return out


def layer_cells(
    class_name: str,
    cfg: Mapping[str, Any],
    keras_major: int,
    input_dim: int,
    weights: list[np.ndarray],
    read: CellWeights,
) -> tuple[list[tuple[Cell, Mapping[str, Any]]], int]:
    """The cells of a recurrent layer (LSTM, GRU, SimpleRNN, CuDNN*, RNN with cells), each with its
    config, and how many of `weights` they take (the rest belong to whatever follows, e.g. the
    backward layer of a Bidirectional)."""
    cells: list[tuple[Cell, Mapping[str, Any]]] = []
    pos, dim = 0, input_dim
    for cls, ccfg in cell_configs(class_name, cfg):
        kind = CELLS[cls]
        if kind.only_keras_major is not None and keras_major != kind.only_keras_major:
            raise UnknownCell(f"{cls} is a Keras {kind.only_keras_major}.x layer, not one of Keras {keras_major}")
        part = weights[pos : pos + kind.weight_count(cls, ccfg)]
        cell = kind.from_keras(cls, ccfg, keras_major, dim, lambda shapes, names, part=part: read(part, shapes, names))
        cells.append((cell, ccfg))
        pos += len(part)
        dim = cell.units
    return cells, pos


def state_names(cells: Sequence[Cell], prefix: str = "") -> list[str]:
    """The state kinds of a layer's cells as the signature names them: `h`, `c`; `cell0_h`... when
    stacked; `prefix` for Bidirectional's `forward_` and `backward_`."""
    if len(cells) == 1:
        return [f"{prefix}{k}" for k in cells[0].state_kinds]
    return [f"{prefix}cell{j}_{k}" for j, c in enumerate(cells) for k in c.state_kinds]
