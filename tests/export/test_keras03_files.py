"""Keras 0.3.3 architectures (`to_json()` / `to_yaml()`) with their unnamed `save_weights` files
(tests/fixtures/old_keras/keras0.3, with Keras 0.3's own `predict` outputs) exported without Keras:
they compute as Keras 1's 'cpu' layout, so they go through the Keras 1 translation and match
within 1e-5 — go_backwards, dropout, masks, Embedding(mask_zero), stateful layers over three calls.
Keras 0.2 files, whose defaults and masking rule differ, are told apart (tests/export/test_keras02_files.py);
unsupported options are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kerasparity import TOL

from helpers.old_keras import FIXTURES as OLD_KERAS
from helpers.old_keras import export_fixture, refusal, worst_difference
from seqserve.errors import ExportError
from seqserve.keras.keras0 import generation

FIXTURES = OLD_KERAS / "keras0.3"
UNSUPPORTED = "unsupported_custom_activation"
SUPPORTED = sorted(p.stem for p in FIXTURES.glob("*.npz") if p.stem != UNSUPPORTED)


@pytest.mark.parametrize("form", ["json", "yaml"])
@pytest.mark.parametrize("name", SUPPORTED)
def test_keras03_fixture_matches_keras03_predict(tmp_path, name, form):
    sig, sess = export_fixture(FIXTURES / f"{name}.{form}", name, tmp_path / "store", FIXTURES / f"{name}.weights.h5")
    assert sig.source["keras_version"] == "0.3"
    assert worst_difference(sig, sess, dict(np.load(FIXTURES / f"{name}.npz"))) <= TOL


def _refused(tmp_path: Path, src: Path, weights: Path | None) -> str:
    return refusal(tmp_path / "store", src, weights)


@pytest.mark.parametrize("form", ["json", "yaml"])
def test_custom_activation_is_refused_naming_file_and_layer(tmp_path, form):
    src = FIXTURES / f"{UNSUPPORTED}.{form}"
    message = _refused(tmp_path, src, FIXTURES / f"{UNSUPPORTED}.weights.h5")
    assert "'lstm'" in message and "scaled_tanh" in message


def test_layer_that_never_existed_is_refused_naming_file_and_layer(tmp_path):
    message = _refused(tmp_path, FIXTURES / "unsupported_layer.json", FIXTURES / "lstm.weights.h5")
    assert "'lstm'" in message and "CuDNNLSTM" in message


def test_keras02_architecture_is_read_as_keras02_not_03(tmp_path):
    keras02 = OLD_KERAS / "keras0.2"
    sig, _ = export_fixture(keras02 / "lstm.json", "lstm", tmp_path / "store", keras02 / "lstm.weights.h5")
    assert sig.source["keras_version"] == "0.2"


def test_keras0_generation_that_cannot_be_told_is_refused():
    layers = [{"name": "LSTM", "output_dim": 5}]
    with pytest.raises(ExportError, match="cannot tell which Keras wrote it"):
        generation({"name": "Sequential", "layers": layers}, layers, "m.json")
