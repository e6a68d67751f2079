"""A real `seqserve serve` per test module, on hand-built ONNX models in a temporary store."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from helpers.onnx_models import write_embedding_model, write_lstm_model
from helpers.server import RunningServer, running_server
from seqserve.store.signature import Signature


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "models"
    write_lstm_model(root, "lstm", 1)
    write_embedding_model(root, "embed", 1)
    # The same LSTM marked stateful, as `seqserve export --stateful` would: it can carry a sequence.
    stateful = write_lstm_model(root, "stateful", 1)
    replace(Signature.read(stateful), stateful=True).write(stateful)
    return root


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[RunningServer]:
    # REST only: these tests need no gRPC, and `--grpc-port 0` (the later flag wins) keeps them independent of it.
    with running_server(store, "--grpc-port", "0") as running:
        yield running


@pytest.fixture(scope="module")
def base_url(server: RunningServer) -> str:
    return f"http://{server.http_url}"
