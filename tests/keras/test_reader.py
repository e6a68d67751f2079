"""The Keras file reader: configs and weights out of .keras zips and legacy .h5 files, in Keras'
own get_weights() order, without Keras or TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

from seqserve.keras import TensorRef, load_keras_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keras2"


def _functional():
    inp = keras.Input((5, 3), name="x")
    seq, h, c = layers.LSTM(4, return_sequences=True, return_state=True, name="enc")(inp)
    bi = layers.Bidirectional(layers.GRU(3, return_sequences=True), name="bi")(seq)
    stack = layers.RNN(layers.StackedRNNCells([layers.SimpleRNNCell(3), layers.LSTMCell(2)]), name="stack")(bi)
    td = layers.TimeDistributed(layers.Dense(2), name="td")(bi)
    dec = layers.LSTM(4, name="dec")(seq, initial_state=[h, c])
    return keras.Model(inp, [stack, td, dec, h])


def test_keras3_weights_come_in_get_weights_order(tmp_path):
    model = _functional()
    model.save(tmp_path / "m.keras")
    read = load_keras_model(tmp_path / "m.keras")
    assert read.format == "keras3" and read.keras_version == keras.__version__
    for layer in model.layers:
        ours = read.layer(layer.name).weights
        theirs = layer.get_weights()
        assert len(ours) == len(theirs), layer.name
        for a, b in zip(ours, theirs, strict=False):
            np.testing.assert_array_equal(a, b)
    assert read.n_params == model.count_params()


def test_keras3_wiring_inputs_outputs_and_initial_state(tmp_path):
    _functional().save(tmp_path / "m.keras")
    read = load_keras_model(tmp_path / "m.keras")
    assert read.inputs == [TensorRef("x")]
    assert read.outputs == [TensorRef("stack"), TensorRef("td"), TensorRef("dec"), TensorRef("enc", 0, 1)]
    dec = read.layer("dec")
    assert dec.calls[0].inputs == [TensorRef("enc", 0, 0)]
    assert dec.calls[0].initial_state == [TensorRef("enc", 0, 1), TensorRef("enc", 0, 2)]


def test_sequential_without_input_layer_gets_one(tmp_path):
    model = keras.Sequential([layers.GRU(3)])
    model.build((None, 4, 2))
    model.save(tmp_path / "s.keras")
    read = load_keras_model(tmp_path / "s.keras")
    assert read.layers[0].class_name == "InputLayer"
    assert read.layers[0].config["batch_shape"] == [None, 4, 2]


def test_legacy_h5_reads_config_weights_and_version():
    read = load_keras_model(FIXTURES / "bidirectional_lstm_concat.h5")
    assert read.format == "h5" and read.keras_version.startswith("2.")
    assert read.keras_major == 2
    bi = [layer for layer in read.layers if layer.class_name == "Bidirectional"][0]
    assert [w.shape for w in bi.weights] == [(6, 16), (4, 16), (16,)] * 2
    assert read.layers[0].class_name == "InputLayer"
    assert read.layers[0].config["batch_shape"][1:] == [5, 6]


def test_legacy_h5_initial_state_wiring():
    read = load_keras_model(FIXTURES / "lstm_initial_state.h5")
    assert [r.layer for r in read.inputs] == ["x", "h0", "c0"]
    lstm = [layer for layer in read.layers if layer.class_name == "LSTM"][0]
    assert [r.layer for r in lstm.calls[0].initial_state] == ["h0", "c0"]


def test_reader_never_imports_keras_or_tensorflow():
    code = (
        "import sys; from seqserve.keras import load_keras_model; from seqserve.export import export_model;"
        f"load_keras_model({str(FIXTURES / 'stacked_lstm_gru.h5')!r});"
        "assert 'keras' not in sys.modules and 'tensorflow' not in sys.modules and 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.h5")), ids=lambda p: p.stem)
def test_every_legacy_fixture_reads(path):
    read = load_keras_model(path)
    assert read.layers and read.inputs and read.outputs
    assert all(layer.weights or layer.class_name in ("InputLayer", "Masking") for layer in read.layers)
