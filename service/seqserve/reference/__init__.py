"""A NumPy implementation of Keras' layer semantics (recurrent layers, masks, states), written
independently of the ONNX exporter's graphs: the oracle the exporter's parity figure is measured
against. It shares with the exporter only what is not math: Keras' call rules and graph walk
(`seqserve.keras`) and each cell kind's weight layout; a kind's `numpy_step` and `onnx_step`
(`seqserve.cells`) are two separate writings of its step.

`run_reference(model, inputs, states)` evaluates a `KerasModel` in float64 and returns the model's
outputs and every recurrent layer's final states (keyed like the signature's StateSpec names).
Layer classes it does not implement raise `NoReference`.
"""

from seqserve.reference.activations import NoReference
from seqserve.reference.model import run_reference

__all__ = ["NoReference", "run_reference"]
