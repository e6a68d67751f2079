"""SimpleRNN: always the Scan form with the input projection hoisted (the ONNX RNN op is slower)."""

from seqserve.export.recurrent import single_cell_layer
from seqserve.export.registry import register

register("SimpleRNN")(single_cell_layer)
