"""Keras 2.3.1 files saved with the Theano backend (tests/fixtures/old_keras/keras2_theano, with
Keras' own `predict` outputs) export within 1e-5. Theano stores convolution kernels flipped on their
spatial axes (it computes a true convolution), and its "same" padding of an even window puts the odd
pixel in front; the reader unflips the kernels and the exporter pads the leading side, also in
ConvLSTM's recurrent convolution (always "same"). The recurrent layers without convolutions need
neither."""

from __future__ import annotations

import h5py
import numpy as np
import onnx
import pytest
from kerasparity import TOL

from helpers.old_keras import FIXTURES as OLD_KERAS
from helpers.old_keras import export_fixture, worst_difference
from seqserve.export.layers.conv import ConvGeometry
from seqserve.keras import load_keras_model

FIXTURES = OLD_KERAS / "keras2_theano"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.npz"))
CONV_LSTM = [name for name in NAMES if name.startswith("conv_lstm")]


def test_every_theano_fixture_is_covered():
    assert {"conv_lstm2d_same", "conv_lstm2d_valid_3x2_last", "lstm", "gru_last"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_theano_saved_fixture_matches_keras_predict(tmp_path, name):
    sig, sess = export_fixture(FIXTURES / f"{name}.h5", name.replace("_", "-"), tmp_path / "store")
    assert sig.source["keras_version"] == "2.3.1"
    assert worst_difference(sig, sess, dict(np.load(FIXTURES / f"{name}.npz"))) <= TOL


@pytest.mark.parametrize("name", CONV_LSTM)
def test_reader_unflips_theano_conv_lstm_kernels(name):
    """Both kernels come back mirrored on every spatial axis; the bias as stored."""
    model = load_keras_model(FIXTURES / f"{name}.h5")
    assert model.backend == "theano"
    (layer,) = [layer for layer in model.layers if layer.class_name == "ConvLSTM2D"]
    with h5py.File(FIXTURES / f"{name}.h5", "r") as h5:
        group = h5["model_weights"][layer.name]
        raw = [np.asarray(group[n.decode() if isinstance(n, bytes) else n]) for n in group.attrs["weight_names"]]
    kernel, recurrent, bias = layer.weights
    assert not np.array_equal(kernel, raw[0])  # a random kernel is not symmetric
    np.testing.assert_array_equal(kernel, raw[0][::-1, ::-1])
    np.testing.assert_array_equal(recurrent, raw[1][::-1, ::-1])
    np.testing.assert_array_equal(bias, raw[2])


def test_even_recurrent_kernel_pads_the_leading_side(tmp_path):
    """conv_lstm2d_valid_3x2_last: the 3x2 recurrent convolution pads (1, 1) rows and (1, 0) columns,
    where TF's "same" pads (1, 0) at the end instead."""
    sig, _ = export_fixture(FIXTURES / "conv_lstm2d_valid_3x2_last.h5", "m", tmp_path / "store")
    model = onnx.load(str(tmp_path / "store" / "m" / "1" / "model.onnx"))
    pads = []
    for function in model.functions:
        for node in function.node:
            if node.op_type == "Scan":
                body = next(a.g for a in node.attribute if a.name == "body")
                for inner in body.node:
                    if inner.op_type == "Conv" and "h" in inner.input[0]:
                        pads.append([list(a.ints) for a in inner.attribute if a.name == "pads"][0])
    assert pads == [[1, 1, 1, 0]]


@pytest.mark.parametrize(
    ("geometry", "size", "pads"),
    [
        (ConvGeometry((2,), (1,), (1,), "same"), 5, [0, 1]),
        (ConvGeometry((2,), (1,), (1,), "same", leading_odd_pad=True), 5, [1, 0]),
        (ConvGeometry((4,), (1,), (1,), "same", leading_odd_pad=True), 5, [2, 1]),
        (ConvGeometry((3,), (1,), (1,), "same", leading_odd_pad=True), 5, [1, 1]),
        # Theano pads span // 2 in front whatever the stride, and only what the last output needs behind.
        (ConvGeometry((3,), (2,), (1,), "same", leading_odd_pad=True), 4, [1, 0]),
        (ConvGeometry((3,), (2,), (1,), "same"), 4, [0, 1]),
        (ConvGeometry((4,), (2,), (1,), "same", leading_odd_pad=True), 6, [2, 0]),
        (ConvGeometry((2,), (1,), (1,), "valid", leading_odd_pad=True), 5, [0, 0]),
    ],
)
def test_theano_same_padding_puts_the_odd_pixel_in_front(geometry, size, pads):
    assert geometry.pads([size]) == pads


def test_theano_kernels_of_every_convolution_are_unflipped():
    """Conv1D/3D and a wrapped Conv2D get their kernel mirrored; biases and recurrent layers stay as stored."""
    from seqserve.keras.reader import _theano_kernels

    rng = np.random.default_rng(0)
    k1, k3, k2, bias = rng.random((3, 2, 4)), rng.random((2, 3, 2, 1, 4)), rng.random((3, 2, 1, 4)), rng.random(4)
    np.testing.assert_array_equal(_theano_kernels("Conv1D", {}, [k1, bias])[0], k1[::-1])
    np.testing.assert_array_equal(_theano_kernels("Conv3D", {}, [k3, bias])[0], k3[::-1, ::-1, ::-1])
    wrapped = _theano_kernels("TimeDistributed", {"layer": {"class_name": "Conv2D", "config": {}}}, [k2, bias])
    np.testing.assert_array_equal(wrapped[0], k2[::-1, ::-1])
    np.testing.assert_array_equal(wrapped[1], bias)
    lstm = [rng.random((3, 8)), rng.random((2, 8)), rng.random(8)]
    assert all(a is b for a, b in zip(_theano_kernels("LSTM", {}, lstm), lstm, strict=True))
