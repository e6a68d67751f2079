"""GRU (reset_after True/False, Keras 2's CuDNNGRU): fused ONNX GRU op where exact, else Scan."""

from seqserve.export.recurrent import single_cell_layer
from seqserve.export.registry import register

register("GRU", "CuDNNGRU", "GRUV1")(single_cell_layer)
