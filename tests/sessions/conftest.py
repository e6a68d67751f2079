"""A real redis-server for the session tests, one per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from helpers.redis_server import running_redis


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url
