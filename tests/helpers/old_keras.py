"""Exporting the old-Keras fixtures (tests/fixtures/old_keras) and comparing them with the outputs
their own Keras wrote: one call, or a stateful model's consecutive calls with the states carried
as the server carries them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from seqserve.errors import ExportError
from seqserve.export import export_model
from seqserve.store.signature import Signature

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "old_keras"


def export_fixture(
    src: Path, name: str, store: Path, weights: Path | None = None
) -> tuple[Signature, ort.InferenceSession]:
    report = export_model(src, name, store=store, progress=False, weights=weights)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(report.path / "model.onnx"), options, providers=["CPUExecutionProvider"])
    return Signature.read(report.path), session


def worst_difference(signature: Signature, session: ort.InferenceSession, data: dict[str, np.ndarray]) -> float:
    """The largest |served - Keras| over the fixture's call (`x`, `y`) or calls (`x_i`, `y_i`)."""
    if "x" in data:
        return _difference(_run(signature, session, data["x"], {})[0], data["y"])
    assert signature.stateful
    states: dict[str, np.ndarray] = {}
    worst = 0.0
    for i in range(3):
        got, states = _run(signature, session, data[f"x_{i}"], states)
        worst = max(worst, _difference(got, data[f"y_{i}"]))
    return worst


def _run(
    signature: Signature, session: ort.InferenceSession, x: np.ndarray, states: dict[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    feeds = {signature.inputs[0].name: x, **states}
    for s in signature.states:
        feeds.setdefault(s.input, np.zeros([x.shape[0], *s.shape[1:]], np.float32))
    got = session.run([signature.outputs[0].name] + [s.output for s in signature.states], feeds)
    return got[0], {s.input: v for s, v in zip(signature.states, got[1:], strict=True)}


def _difference(got: np.ndarray, want: np.ndarray) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))


def refusal(store: Path, src: Path, weights: Path | None) -> str:
    """The one-line ExportError exporting `src` raises; it names the file, and the store gets nothing."""
    with pytest.raises(ExportError) as refused:
        export_model(src, "bad", store=store, progress=False, weights=weights)
    message = str(refused.value)
    assert "\n" not in message and str(src) in message, message
    assert not (store / "bad").exists()
    return message
