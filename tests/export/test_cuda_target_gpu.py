"""--target cuda on a real GPU: every recurrent node (LSTM/GRU op or Scan) is placed on the CUDA EP
and the outputs match Keras (computed on the CPU first) to 1e-5 with TF32 off. Skipped without
onnxruntime-gpu's CUDA execution provider."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import onnxruntime as ort
import pytest
from keras import layers
from kerasparity import TOL, as_list, max_diff, random_seq, randomize_weights

from seqserve.export import export_model
from seqserve.store.signature import Signature

pytestmark = pytest.mark.gpu

T, F, U, B = 7, 4, 8, 4

MODELS = {
    "lstm": lambda: [layers.LSTM(U, return_sequences=True)],
    "lstm_hard_sigmoid": lambda: [layers.LSTM(U, recurrent_activation="hard_sigmoid", return_sequences=True)],
    "gru": lambda: [layers.GRU(U, return_sequences=True)],
    "gru_reset_before": lambda: [layers.GRU(U, reset_after=False, return_sequences=True)],
    "simple_rnn": lambda: [layers.SimpleRNN(U, return_sequences=True)],
    "masked_lstm": lambda: [layers.Masking(0.0), layers.LSTM(U, return_sequences=True)],
    "bidirectional_gru": lambda: [layers.Bidirectional(layers.GRU(U, return_sequences=True))],
    "stacked_cells": lambda: [layers.RNN(layers.StackedRNNCells([layers.LSTMCell(U), layers.GRUCell(U)]))],
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_cuda_target_runs_every_recurrent_node_on_the_cuda_ep(tmp_path: Path, kind: str) -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("no CUDA execution provider")
    model = keras.Sequential([keras.Input((T, F)), *MODELS[kind]()])
    randomize_weights(model, seed=40)
    x = random_seq(B, T, F, seed=40)
    x[0, :2] = 0.0
    x[1, 5:] = 0.0
    want = as_list(model.predict(x, verbose=0))  # Keras on the CPU, before any CUDA library loads
    src = tmp_path / "m.keras"
    model.save(src)
    report = export_model(src, "gpu", store=tmp_path / "store", target="cuda", progress=False)
    sig = Signature.read(report.path)
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / "profile")
    session = ort.InferenceSession(
        str(report.path / "model.onnx"),
        opts,
        providers=[("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"],
    )
    feeds = {sig.inputs[0].name: x, **{s.input: np.zeros([B, *s.shape[1:]], np.float32) for s in sig.states}}
    got = session.run([o.name for o in sig.outputs], feeds)
    profile = json.loads(Path(session.end_profiling()).read_text())
    assert max_diff(got, want) <= TOL
    placed = {
        (e["args"].get("op_name"), e["args"].get("provider"))
        for e in profile
        if e.get("cat") == "Node" and e["args"].get("op_name") in ("LSTM", "GRU", "RNN", "Scan")
    }
    assert placed, "no recurrent node in the profile"
    assert {p for _, p in placed} == {"CUDAExecutionProvider"}, placed
