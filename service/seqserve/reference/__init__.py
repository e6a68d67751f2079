"""A NumPy implementation of Keras' layer semantics (recurrent layers, masks, states), written
independently of the ONNX exporter: the oracle the exporter's parity figure is measured against.

`run_reference(model, inputs, states)` evaluates a `KerasModel` in float64 and returns the model's
outputs and every recurrent layer's final states (keyed like the signature's StateSpec names).
Layer classes it does not implement raise `NoReference`.
"""

from seqserve.reference.model import NoReference, run_reference

__all__ = ["NoReference", "run_reference"]
