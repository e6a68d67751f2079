"""Legacy .h5 files written by real tf.keras 2.21 (tests/fixtures/keras2, with tf.keras' own
outputs): exported without TensorFlow and matching tf.keras to 1e-5 — Keras 2's hard_sigmoid
(0.2x+0.5), GRU reset_after=False, CuDNNLSTM/CuDNNGRU weights, masks, a stateful LSTM."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from kerasparity import TOL

from seqserve.export import export_model
from seqserve.store.signature import Signature

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keras2"
STATEFUL = {"stateful_lstm"}


def _export(path: Path, tmp_path: Path, **kwargs):
    report = export_model(path, path.stem, store=tmp_path / "store", progress=False, **kwargs)
    sig = Signature.read(report.path)
    sess = ort.InferenceSession(str(report.path / "model.onnx"), providers=["CPUExecutionProvider"])
    return report, sig, sess


def _zeros(sig: Signature, batch: int) -> dict[str, np.ndarray]:
    return {s.input: np.zeros([batch, *s.shape[1:]], np.float32) for s in sig.states}


@pytest.mark.parametrize(
    "path", [p for p in sorted(FIXTURES.glob("*.h5")) if p.stem not in STATEFUL], ids=lambda p: p.stem
)
def test_keras2_fixture_matches_tf_keras(tmp_path, path):
    data = np.load(path.with_suffix(".npz"))
    report, sig, sess = _export(path, tmp_path)
    assert sig.source["format"] == "h5" and sig.source["keras_version"].startswith("2.")
    feeds = {i.name: data[i.name] for i in sig.inputs}
    feeds.update(_zeros(sig, next(iter(feeds.values())).shape[0]))
    got = sess.run([o.name for o in sig.outputs], feeds)
    for out, value in zip(sig.outputs, got, strict=False):
        diff = float(np.max(np.abs(value - data[out.name])))
        assert diff <= TOL, f"{out.name}: max abs diff {diff:.3g}"


def test_keras2_stateful_lstm_carries_state_across_calls(tmp_path):
    path = FIXTURES / "stateful_lstm.h5"
    data = np.load(path.with_suffix(".npz"))
    report, sig, sess = _export(path, tmp_path)
    assert sig.stateful
    states = _zeros(sig, 2)
    for i in range(3):
        res = sess.run(None, {sig.inputs[0].name: data[f"x_{i}"], **states})
        by_name = dict(zip([o.name for o in sess.get_outputs()], res, strict=False))
        assert float(np.max(np.abs(by_name[sig.outputs[0].name] - data[f"y_{i}"]))) <= TOL
        states = {s.input: by_name[s.output] for s in sig.states}


@pytest.mark.parametrize("name", ["lstm_hard_sigmoid", "gru_reset_before_hard_sigmoid", "masking_gru"])
def test_keras2_fixture_cuda_target_matches_tf_keras(tmp_path, name):
    """The Scan forms chosen for --target cuda are exact too (run here on the CPU EP)."""
    path = FIXTURES / f"{name}.h5"
    data = np.load(path.with_suffix(".npz"))
    report, sig, sess = _export(path, tmp_path, target="cuda")
    feeds = {i.name: data[i.name] for i in sig.inputs}
    feeds.update(_zeros(sig, 3))
    got = sess.run([sig.outputs[0].name], feeds)[0]
    assert float(np.max(np.abs(got - data[sig.outputs[0].name]))) <= TOL


def test_keras2_hard_sigmoid_is_not_keras3s():
    """Guard: read as if Keras 3 had written it (x/6+0.5), the fixture no longer matches, so the
    exporter's use of the file's Keras version is what makes it exact."""
    from seqserve.export.convert import build_onnx
    from seqserve.keras import load_keras_model

    path = FIXTURES / "lstm_hard_sigmoid.h5"
    data = np.load(path.with_suffix(".npz"))
    model = load_keras_model(path)
    assert model.keras_major == 2
    model.keras_version = "3.0.0"
    built = build_onnx(model)
    sess = ort.InferenceSession(built.model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"x": data["x"], **{s.input: np.zeros([3, *s.shape[1:]], np.float32) for s in built.states}}
    wrong = sess.run([built.outputs[0].name], feeds)[0]
    assert float(np.max(np.abs(wrong - data[built.outputs[0].name]))) > 1e-3


def test_keras2_masks_a_call_given_states_where_keras3_would_not(tmp_path):
    """`masked_lstm_initial_state`: Masking -> LSTM(initial_state=[h0, c0]) -> GRU. tf.keras masks
    the LSTM (its Keras-tensor states join the inputs list, whose first mask RNN.call uses); Keras 3
    would not (one tensor argument only gets the automatic mask). Matches tf.keras, parity figure
    included, and the same file read as a Keras 3 one no longer does: the rule is per generation."""
    from seqserve.export.convert import build_onnx
    from seqserve.keras import load_keras_model

    path = FIXTURES / "masked_lstm_initial_state.h5"
    data = np.load(path.with_suffix(".npz"))
    assert np.all(data["lstm"][0, :2] == 0.0)  # front-padded steps: masked, zeros out
    report, sig, sess = _export(path, tmp_path)
    assert sig.parity["max_abs_diff"] <= TOL
    feeds = {i.name: data[i.name] for i in sig.inputs}
    feeds.update(_zeros(sig, 3))
    got = sess.run([o.name for o in sig.outputs], feeds)
    for out, value in zip(sig.outputs, got, strict=True):
        assert float(np.max(np.abs(value - data[out.name]))) <= TOL, out.name

    model = load_keras_model(path)
    model.keras_version = "3.0.0"
    built = build_onnx(model)
    sess3 = ort.InferenceSession(built.model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds3 = {i.name: data[i.name] for i in built.inputs}
    feeds3.update({s.input: np.zeros([3, *s.shape[1:]], np.float32) for s in built.states})
    wrong = sess3.run([built.outputs[0].name], feeds3)[0]
    assert float(np.max(np.abs(wrong - data["lstm"]))) > 1e-2
