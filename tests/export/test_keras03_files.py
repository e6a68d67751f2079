"""Keras 0.3.3 architectures (`to_json()` / `to_yaml()`) with their unnamed `save_weights` files
(tests/fixtures/old_keras/keras0.3, with Keras 0.3's own `predict` outputs) exported without Keras:
they compute as Keras 1's 'cpu' layout, so they go through the Keras 1 translation and match
within 1e-5 — go_backwards, dropout, masks, Embedding(mask_zero), stateful layers over three calls.
Keras 0.2 files, whose defaults and masking rule differ, are refused, as are unsupported options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from kerasparity import TOL

from seqserve.errors import ExportError
from seqserve.export import export_model
from seqserve.keras.keras0 import generation
from seqserve.store.signature import Signature

OLD_KERAS = Path(__file__).resolve().parents[1] / "fixtures" / "old_keras"
FIXTURES = OLD_KERAS / "keras0.3"
UNSUPPORTED = "unsupported_custom_activation"
SUPPORTED = sorted(p.stem for p in FIXTURES.glob("*.npz") if p.stem != UNSUPPORTED)


def _export(src: Path, weights: Path, store: Path):
    report = export_model(src, src.stem, store=store, progress=False, weights=weights)
    sig = Signature.read(report.path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return sig, ort.InferenceSession(str(report.path / "model.onnx"), opts, providers=["CPUExecutionProvider"])


def _run(sig: Signature, sess: ort.InferenceSession, x: np.ndarray, states: dict[str, np.ndarray]):
    feeds = {sig.inputs[0].name: x, **states}
    for s in sig.states:
        feeds.setdefault(s.input, np.zeros([x.shape[0], *s.shape[1:]], np.float32))
    got = sess.run([sig.outputs[0].name] + [s.output for s in sig.states], feeds)
    return got[0], {s.input: v for s, v in zip(sig.states, got[1:], strict=True)}


def _diff(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))


@pytest.mark.parametrize("form", ["json", "yaml"])
@pytest.mark.parametrize("name", SUPPORTED)
def test_keras03_fixture_matches_keras03_predict(tmp_path, name, form):
    data = np.load(FIXTURES / f"{name}.npz")
    sig, sess = _export(FIXTURES / f"{name}.{form}", FIXTURES / f"{name}.weights.h5", tmp_path / "store")
    assert sig.source["keras_version"] == "0.3"
    if "x" in data:
        got, _ = _run(sig, sess, data["x"], {})
        assert _diff(got, data["y"]) <= TOL
        return
    assert sig.stateful
    states: dict[str, np.ndarray] = {}
    for i in range(3):
        got, states = _run(sig, sess, data[f"x_{i}"], states)
        assert _diff(got, data[f"y_{i}"]) <= TOL, f"call {i}"


def _refused(tmp_path: Path, src: Path, weights: Path) -> str:
    store = tmp_path / "store"
    with pytest.raises(ExportError) as err:
        export_model(src, "bad", store=store, progress=False, weights=weights)
    message = str(err.value)
    assert "\n" not in message and str(src) in message
    assert not (store / "bad").exists()
    return message


@pytest.mark.parametrize("form", ["json", "yaml"])
def test_custom_activation_is_refused_naming_file_and_layer(tmp_path, form):
    src = FIXTURES / f"{UNSUPPORTED}.{form}"
    message = _refused(tmp_path, src, FIXTURES / f"{UNSUPPORTED}.weights.h5")
    assert "'lstm'" in message and "scaled_tanh" in message


def test_layer_that_never_existed_is_refused_naming_file_and_layer(tmp_path):
    message = _refused(tmp_path, FIXTURES / "unsupported_layer.json", FIXTURES / "lstm.weights.h5")
    assert "'lstm'" in message and "CuDNNLSTM" in message


def test_keras02_architecture_is_refused(tmp_path):
    keras02 = OLD_KERAS / "keras0.2"
    message = _refused(tmp_path, keras02 / "lstm.json", keras02 / "lstm.weights.h5")
    assert "Keras 0.2" in message


def test_keras0_generation_that_cannot_be_told_is_refused():
    layers = [{"name": "LSTM", "output_dim": 5}]
    with pytest.raises(ExportError, match="cannot tell which Keras wrote it"):
        generation({"name": "Sequential", "layers": layers}, layers, "m.json")
