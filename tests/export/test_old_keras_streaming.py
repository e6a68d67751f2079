"""Stateful models of the old Keras generations (Keras 0.3 and 1 on Theano, tf.keras SavedModel)
streamed through a real server: each fixture's three consecutive `predict` calls, sent as three
steps of one sequence (the first with sequence_start), answer what that Keras answered (<= 1e-5).
One server on one store serves every fixture."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from kerasparity import TOL

from helpers.old_keras import FIXTURES
from helpers.server import RunningServer, running_server
from seqserve.export import export_model
from seqserve.store.signature import Signature

GENERATIONS = ("keras0.3", "keras1", "tf_savedmodel")
CALLS = 3


def _stateful() -> list[Path]:
    return [npz for generation in GENERATIONS for npz in sorted((FIXTURES / generation).glob("*stateful*.npz"))]


def _model_name(npz: Path) -> str:
    return re.sub(r"[^a-z0-9]+", "-", f"{npz.parent.name}-{npz.stem}".lower())


def _source(npz: Path) -> tuple[Path, Path | None]:
    """The fixture's whole-model file or directory, else its to_json() architecture and weights."""
    base = npz.with_suffix("")
    if base.with_suffix(".h5").is_file():
        return base.with_suffix(".h5"), None
    if base.is_dir():
        return base, None
    return base.with_suffix(".json"), base.parent / f"{base.name}.weights.h5"


FIXTURE_FILES = _stateful()


def test_every_generation_has_a_stateful_fixture():
    assert {npz.parent.name for npz in FIXTURE_FILES} == set(GENERATIONS)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("old_keras_streaming") / "store"
    for npz in FIXTURE_FILES:
        src, weights = _source(npz)
        export_model(src, _model_name(npz), store=root, progress=False, weights=weights)
    return root


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[RunningServer]:
    with running_server(store) as running:
        yield running


@pytest.mark.parametrize("npz", FIXTURE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_stateful_fixture_streamed_over_consecutive_calls_matches_keras(store, server, npz):
    import tritonclient.http as httpclient

    name = _model_name(npz)
    signature = Signature.read(store / name / "1")
    assert signature.stateful
    data = np.load(npz)
    client = httpclient.InferenceServerClient(server.http_url)
    sequence_id = 1000 + FIXTURE_FILES.index(npz)
    for i in range(CALLS):
        x = np.ascontiguousarray(data[f"x_{i}"], np.float32)
        tensor = httpclient.InferInput(signature.inputs[0].name, list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        result = client.infer(name, [tensor], sequence_id=sequence_id, sequence_start=i == 0)
        got = result.as_numpy(signature.outputs[0].name)
        want = data[f"y_{i}"]
        assert got.shape == want.shape, (i, got.shape, want.shape)
        assert float(np.max(np.abs(got.astype(np.float64) - want))) <= TOL, f"call {i}"
    client.close()
