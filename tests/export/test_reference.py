"""The NumPy reference (the exporter's parity oracle) agrees with Keras itself, and the parity
figure written into the signature is small for every model kind."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers
from kerasparity import as_list, export, max_diff, random_seq, randomize_weights

from seqserve.keras import load_keras_model
from seqserve.reference import NoReference, run_reference

T, F, U = 6, 3, 4


def _models():
    inp = keras.Input((T, F))
    masked = layers.Masking(0.0)(inp)
    bi = layers.Bidirectional(layers.GRU(U, return_sequences=True, reset_after=False), merge_mode="ave")(masked)
    stack = layers.RNN(
        layers.StackedRNNCells([layers.LSTMCell(U, recurrent_activation="hard_sigmoid"), layers.SimpleRNNCell(3)]),
        go_backwards=True,
    )(bi)
    yield "masked_bidirectional_stack", keras.Model(inp, layers.Dense(2, activation="softmax")(stack))
    yield "lstm_return_state", keras.Sequential([keras.Input((T, F)), layers.LSTM(U, return_state=True)])
    yield (
        "embedding_mask",
        keras.Sequential(
            [
                keras.Input((T,), dtype="int32"),
                layers.Embedding(7, F, mask_zero=True),
                layers.SimpleRNN(U, return_sequences=True, activation="gelu"),
            ]
        ),
    )


@pytest.mark.parametrize("name,model", list(_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_reference_matches_keras(tmp_path, name, model):
    randomize_weights(model, seed=50)
    path = tmp_path / "m.keras"
    model.save(path)
    if name == "embedding_mask":
        x = np.random.default_rng(1).integers(0, 7, (3, T)).astype(np.int32)
        x[0, :3] = 0
    else:
        x = random_seq(3, T, F, seed=1)
        x[0, :2] = 0.0
        x[1, 3] = 0.0
        x[2, 4:] = 0.0
    outs, _ = run_reference(load_keras_model(path), [x])
    assert max_diff([o.astype(np.float32) for o in outs], as_list(model.predict(x, verbose=0))) <= 1e-5


def test_signature_parity_is_measured_and_small(tmp_path):
    for name, model in _models():
        randomize_weights(model, seed=51)
        sig = export(model, tmp_path / name).signature
        assert sig.parity["max_abs_diff"] is not None and sig.parity["max_abs_diff"] <= 1e-5, name


def test_unknown_layer_has_no_reference():
    from seqserve.keras.model import KerasModel, Layer, LayerCall, TensorRef

    model = KerasModel(
        "x",
        "keras3",
        "3",
        "torch",
        "m",
        [
            Layer("i", "InputLayer", {"batch_shape": [None, 2]}),
            Layer("w", "Weird", {}, calls=[LayerCall([TensorRef("i")])]),
        ],
        [TensorRef("i")],
        [TensorRef("w")],
    )
    with pytest.raises(NoReference):
        run_reference(model, [np.zeros((1, 2), np.float32)])
