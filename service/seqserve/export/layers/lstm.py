"""LSTM (and Keras 2's CuDNNLSTM): fused ONNX LSTM op where exact, else the Scan form."""

from seqserve.export.recurrent import single_cell_layer
from seqserve.export.registry import register

register("LSTM", "CuDNNLSTM", "LSTMV1")(single_cell_layer)
