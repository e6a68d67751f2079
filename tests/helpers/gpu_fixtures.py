"""The Keras models of tests/fixtures/gpu (scripts/build_gpu_fixtures.py), exported and run through seqserve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seqserve.export import export_model
from seqserve.runtime.providers import ProviderList
from seqserve.runtime.session import OrtModel, session_options
from seqserve.store.signature import MODEL_FILE, Signature

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.keras"))


def keras_io(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixture's input and Keras' output for it."""
    with np.load(FIXTURES / f"{name}.npz") as saved:
        return saved["x"], saved["y"]


def export_and_load(name: str, store: Path, providers: ProviderList, target: str = "cuda") -> OrtModel:
    """Exports the fixture (for `target`) and loads it as the server does, its first run profiled."""
    report = export_model(FIXTURES / f"{name}.keras", name, store=store, target=target, progress=False)
    return OrtModel(report.path / MODEL_FILE, Signature.read(report.path), providers, session_options(1, 1, False))


def run(model: OrtModel, x: np.ndarray) -> np.ndarray:
    outputs = model.run({model.signature.inputs[0].name: x, **model.zero_states(x.shape[0])})
    return outputs[model.signature.outputs[0].name]
