"""Shared helpers of the export tests: save a real Keras model, export it, run it in ONNX Runtime."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import onnxruntime as ort

from seqserve.export import ExportReport, export_model
from seqserve.store.signature import Signature

TOL = 1e-5


@dataclass
class Exported:
    report: ExportReport
    signature: Signature
    session: ort.InferenceSession
    max_diffs: list[float] = field(default_factory=list)

    def run(self, xs: list[np.ndarray], states: dict[str, np.ndarray] | None = None):
        """(outputs in signature order, final states by StateSpec.name). Missing states are zeros."""
        feeds = {spec.name: x for spec, x in zip(self.signature.inputs, xs, strict=False)}
        batch = xs[0].shape[0]
        for s in self.signature.states:
            value = (states or {}).get(s.name)
            feeds[s.input] = value if value is not None else np.zeros([batch, *s.shape[1:]], np.float32)
        names = [o.name for o in self.signature.outputs] + [s.output for s in self.signature.states]
        res = self.session.run(names, feeds)
        n = len(self.signature.outputs)
        return res[:n], {s.name: v for s, v in zip(self.signature.states, res[n:], strict=False)}


def export(model, tmp_path: Path, name: str = "m", parity_tol: float = TOL, **kwargs) -> Exported:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    report = export_model(path, name, store=tmp_path / "store", progress=False, **kwargs)
    signature = Signature.read(report.path)
    # The parity figure measured at export (against the NumPy reference) holds the same bar.
    measured = signature.parity.get("max_abs_diff")
    assert measured is None or measured <= parity_tol, signature.parity
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(report.path / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    return Exported(report, signature, session)


def as_list(y) -> list[np.ndarray]:
    return [np.asarray(v) for v in y] if isinstance(y, (list, tuple)) else [np.asarray(y)]


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b), (len(a), len(b))
    worst = 0.0
    for x, y in zip(a, b, strict=False):
        assert x.shape == y.shape, (x.shape, y.shape)
        if not x.size:
            continue
        assert np.all(np.isfinite(y)), "Keras output is not finite: the test input is badly chosen"
        worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
    assert np.isfinite(worst), "ONNX output is not finite"
    if os.environ.get("SEQSERVE_DIFF_LOG"):  # collect the figures for a report: SEQSERVE_DIFF_LOG=path
        with open(os.environ["SEQSERVE_DIFF_LOG"], "a") as log:
            log.write(f"{worst!r}\n")
    return worst


def assert_matches_keras(model, tmp_path: Path, xs: list[np.ndarray] | np.ndarray, **kwargs) -> Exported:
    """Export `model`, run it with zero states, compare every output with `model.predict`."""
    xs = xs if isinstance(xs, list) else [xs]
    exported = export(model, tmp_path, **kwargs)
    expected = as_list(model.predict(xs if len(xs) > 1 else xs[0], verbose=0))
    got, _ = exported.run(xs)
    diff = max_diff(got, expected)
    assert diff <= TOL, f"max abs diff {diff:.3g} > {TOL}"
    exported.max_diffs.append(diff)
    return exported


def random_seq(batch: int, steps: int, features: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, steps, features)).astype(np.float32)


def randomize_weights(model, seed: int = 0, scale: float = 0.5) -> None:
    """Non-trivial weights everywhere (biases too), so that every gate and bias path matters."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if ws:
            layer.set_weights([(rng.standard_normal(w.shape) * scale).astype(w.dtype) for w in ws])
