"""One real server on the example store for the fuzz tests that need one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.fuzzing import EXAMPLE_STORE
from helpers.server import RunningServer, running_server


@pytest.fixture(scope="session")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """`seqserve serve` on the committed example store, REST and gRPC, as a user starts it."""
    with running_server(EXAMPLE_STORE, log_dir=tmp_path_factory.mktemp("fuzz-logs")) as server:
        yield server
