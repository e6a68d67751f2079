"""Fixtures of the export tests: a session-wide cache of built+exported Keras models, so a
parametrised matrix that varies only the input data builds each model once."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest
from kerasparity import Exported, export


@pytest.fixture(scope="session")
def exported_cache(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., tuple[Any, Exported]]:
    cache: dict[Any, tuple[Any, Exported]] = {}

    def get(key: Any, build: Callable[[], Any], **export_kwargs: Any) -> tuple[Any, Exported]:
        full_key = (key, tuple(sorted(export_kwargs.items())))
        if full_key not in cache:
            model = build()
            cache[full_key] = (model, export(model, tmp_path_factory.mktemp("cached"), **export_kwargs))
        return cache[full_key]

    return get
