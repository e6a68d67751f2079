"""A broken file in a model's directory affects that model only: the scan goes on, other models
serve, a running model keeps its last good config.yaml, and each problem is logged once per change."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from helpers.onnx_models import write_embedding_model, write_lstm_model
from seqserve.catalog import Catalog
from seqserve.errors import ModelNotReady
from seqserve.store.model_config import ModelConfig
from seqserve.store.model_store import ModelStore
from seqserve.store.signature import MODEL_FILE, SIGNATURE_FILE


class Runner:
    def __init__(self, config: ModelConfig) -> None:
        self.configs = [config]

    def configure(self, config: ModelConfig) -> None:
        self.configs.append(config)

    def close(self) -> None:
        pass


def _loader(name: str, version: int, path: Path, signature: object, config: ModelConfig) -> Runner:
    if path.read_bytes().startswith(b"\xff"):  # what ONNX Runtime does with a file that is no model
        raise RuntimeError(f"[ONNXRuntimeError] : 7 : INVALID_PROTOBUF : Load model from {path} failed")
    return Runner(config)


def _rewrite(path: Path, content: bytes) -> None:
    """Writes and moves the modification time on, so a change is seen even within one clock tick."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_bytes(content)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def _problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_config_yaml_that_is_not_utf8_makes_only_its_model_unavailable(tmp_path: Path) -> None:
    write_lstm_model(tmp_path, "m", 1)
    write_embedding_model(tmp_path, "other", 1)
    (tmp_path / "m" / "config.yaml").write_bytes(b"max_batch_size: 8\n\xff\xfe\x00oops\n")
    store = ModelStore(tmp_path, _loader)
    store.scan()  # must not raise
    with pytest.raises(ModelNotReady, match=r"config\.yaml: not UTF-8 text"):
        store.get_ready("m")
    assert store.get_ready("other").ready
    assert Catalog(store).ready()  # one model's broken file does not take the server out of service


def test_a_config_broken_while_serving_keeps_the_last_good_one_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_lstm_model(tmp_path, "m", 1)
    config = tmp_path / "m" / "config.yaml"
    _rewrite(config, b"max_batch_size: 8\n")
    store = ModelStore(tmp_path, _loader)
    store.scan()
    runner = store.get_ready("m").runner
    _rewrite(config, b"max_batch_size: \xff\n")
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            store.scan()
    served = store.get_ready("m")
    assert served.runner is runner and served.config.max_batch_size == 8
    assert "not UTF-8" in served.problem and "config.yaml" in served.problem
    assert len([m for m in _problems(caplog) if "not UTF-8" in m]) == 1
    caplog.clear()
    _rewrite(config, b"max_queue_delay: .inf\n")  # another change, another problem: logged once more
    with caplog.at_level(logging.INFO):
        store.scan()
        store.scan()
    assert len([m for m in _problems(caplog) if "max_queue_delay" in m]) == 1
    _rewrite(config, b"max_batch_size: 4\n")
    store.scan()
    assert store.get_ready("m").config.max_batch_size == 4 and store.get_ready("m").problem == ""
    assert [c.max_batch_size for c in runner.configs] == [8, 4]


@pytest.mark.parametrize(
    ("file", "content", "expected"),
    [
        (MODEL_FILE, b"\xff\x00 no onnx model", "INVALID_PROTOBUF"),
        (SIGNATURE_FILE, b'{"inputs": \xff}', "signature.json"),
        (SIGNATURE_FILE, b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": "abc"}], "outputs": []}', "shape"),
        (SIGNATURE_FILE, b"[1, 2]", "signature.json"),
    ],
)
def test_a_broken_version_file_is_logged_once_and_retried_when_it_changes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, file: str, content: bytes, expected: str
) -> None:
    write_embedding_model(tmp_path, "other", 1)
    version = write_lstm_model(tmp_path, "m", 1)
    good = (version / file).read_bytes()
    _rewrite(version / file, content)
    store = ModelStore(tmp_path, _loader)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            store.scan()
    with pytest.raises(ModelNotReady, match=expected):
        store.get_ready("m")
    assert len(_problems(caplog)) == 1, _problems(caplog)
    assert store.get_ready("other").ready and Catalog(store).ready()
    _rewrite(version / file, good)
    store.scan()
    assert store.get_ready("m").ready
