"""How Keras calls a layer at inference, the rules both the exporter and the NumPy reference follow.

- Which of a call's tensors are initial states (`call_inputs`): Keras 1/2 wire them as extra
  inbound tensors of a recurrent layer (the reader splits those off); Keras 3 may pass them as the
  second positional argument, `lstm(x, [h, c])`.
- Whether the call gets its input's mask (`keras_passes_mask`).
- Which layers compute nothing at inference (`IDENTITY_AT_INFERENCE`).
"""

from __future__ import annotations

from typing import Any

from seqserve.errors import ExportError
from seqserve.keras.model import KerasModel, Layer, LayerCall, TensorRef

# Layers that take initial states: `call(sequences, initial_state=None, mask=None, ...)`.
STATE_TAKING_LAYERS = frozenset(
    {
        "LSTM",
        "GRU",
        "SimpleRNN",
        "RNN",
        "Bidirectional",
        "CuDNNLSTM",
        "CuDNNGRU",
        "ConvLSTM1D",
        "ConvLSTM2D",
        "ConvLSTM3D",
        "LSTMV1",
        "GRUV1",
    }
)

# Identity at inference: dropout and noise are training-time only, and so is an activity penalty.
IDENTITY_AT_INFERENCE = frozenset(
    {
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
    }
)


def keras3_tensors(obj: Any) -> list[TensorRef]:
    """Every `__keras_tensor__` inside a raw Keras 3 call argument, in order."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            hist = (obj.get("config") or {}).get("keras_history")
            if not (isinstance(hist, list) and len(hist) == 3):
                raise ExportError(f"malformed keras tensor {str(obj)[:80]}")
            return [TensorRef(str(hist[0]), int(hist[1]), int(hist[2]))]
        out: list[TensorRef] = []
        for v in obj.values():
            out.extend(keras3_tensors(v))
        return out
    if isinstance(obj, (list, tuple)):
        out = []
        for v in obj:
            out.extend(keras3_tensors(v))
        return out
    return []


def call_inputs(model: KerasModel, layer: Layer, call: LayerCall) -> tuple[list[TensorRef], list[TensorRef]]:
    """(inputs, initial states) of a call. A Keras 3 recurrent layer may get its states as the
    second positional argument, `lstm(x, [h, c])` (`call(sequences, initial_state, ...)`); the
    reader lists those tensors among the inputs."""
    args = call.args
    if model.keras_major >= 3 and layer.class_name in STATE_TAKING_LAYERS and not call.initial_state and len(args) >= 2:
        counts = [len(keras3_tensors(a)) for a in args]
        if counts[1] and not any(counts[2:]) and 0 < counts[0] < len(call.inputs):
            return call.inputs[: counts[0]], call.inputs[counts[0] :]
    return call.inputs, call.initial_state


def keras_passes_mask(model: KerasModel, call: LayerCall) -> bool:
    """Whether Keras hands the first input's mask to the layer's `call()`.

    An explicit `mask=` (Keras 3 functional configs) always counts. Otherwise, Keras 3
    (`Layer.__call__`, keras/src/layers/layer.py, "6. Populate mask argument(s)") fills `mask` in
    from the inputs' `_keras_mask` only when the call has exactly one tensor argument (a list of
    tensors is one argument): `lstm(x, initial_state=[h, c])` or `lstm(x, [h, c])` has two, so
    the layer runs unmasked, while its output still gets compute_mask(x, mask of x). Keras 2
    (tf_keras `RNN.__call__` / `Bidirectional.__call__`) folds Keras-tensor states into the inputs
    list, `Layer._get_input_masks` passes the list of masks and `RNN.call` uses the first: masked.
    """
    if call.mask is not None or model.keras_major < 3:
        return True
    n_args = sum(1 for a in call.args if keras3_tensors(a)) if call.args else 1
    return n_args + (1 if call.initial_state else 0) <= 1
