"""Reading Keras model files (`.keras` zips, legacy `.h5`) without Keras or TensorFlow.

`load_keras_model(path)` returns a `KerasModel`: layers with their configs, their weights in
`get_weights()` order, and the graph wiring. Nothing from the file is ever executed.
"""

from seqserve.keras.model import KerasModel, Layer, LayerCall, TensorRef
from seqserve.keras.reader import load_keras_model

__all__ = ["KerasModel", "Layer", "LayerCall", "TensorRef", "load_keras_model"]
