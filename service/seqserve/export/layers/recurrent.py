"""The recurrent layers made of cells: every one-cell layer of `seqserve.cells.CELL_LAYERS` (LSTM,
GRU, SimpleRNN, their CuDNN and V1 forms) and the generic `RNN` with its cells."""

from seqserve.cells import CELL_LAYERS
from seqserve.export.recurrent import recurrent_layer
from seqserve.export.registry import register

register(*sorted(CELL_LAYERS), "RNN")(recurrent_layer)
