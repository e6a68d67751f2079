"""A real `seqserve serve` per test module, on hand-built ONNX models in a temporary store.

The server runs in a child process and the tests talk to it over the wire, as any client would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.onnx_models import write_embedding_model, write_lstm_model
from helpers.server import RunningServer, running_server

# Small, so an oversize request is cheap to send; every good request of these tests fits easily.
MAX_REQUEST_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "models"
    write_lstm_model(root, "lstm", 1)
    write_embedding_model(root, "embed", 1)
    return root


@pytest.fixture(scope="module")
def lstm_dir(store: Path) -> Path:
    """The version directory `run_directly` (the oracle) reads."""
    return store / "lstm" / "1"


@pytest.fixture(scope="module")
def embed_dir(store: Path) -> Path:
    return store / "embed" / "1"


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[RunningServer]:
    with running_server(store, env={"SEQSERVE_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES)}) as running:
        yield running
