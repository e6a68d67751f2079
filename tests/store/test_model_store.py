"""The store finds versions on disk, serves the highest ready one, and follows additions and removals;
every runner it makes is told of config changes and closed exactly once."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from helpers.onnx_models import write_embedding_model, write_lstm_model
from seqserve.errors import ModelNotFound, ModelNotReady
from seqserve.store.model_config import ModelConfig
from seqserve.store.model_store import ModelStore
from seqserve.store.signature import MODEL_FILE


class Runner:
    """What the store's loader makes in these tests: it records what the store tells it."""

    made: list[Runner] = []

    def __init__(self, name: str, version: int, config: ModelConfig) -> None:
        self.name, self.version, self.configs, self.closed = name, version, [config], 0
        Runner.made.append(self)

    def configure(self, config: ModelConfig) -> None:
        self.configs.append(config)

    def close(self) -> None:
        self.closed += 1


def _loader(name: str, version: int, path: Path, signature: object, config: ModelConfig) -> Runner:
    return Runner(name, version, config)


@pytest.fixture(autouse=True)
def _fresh_runners() -> None:
    Runner.made = []


def test_highest_ready_version_is_served_unless_one_is_named(tmp_path: Path) -> None:
    write_lstm_model(tmp_path, "m", 1)
    write_lstm_model(tmp_path, "m", 3)
    store = ModelStore(tmp_path, _loader)
    store.scan()
    assert store.get_ready("m").version == 3
    assert store.get_ready("m", "1").version == 1
    assert [v.version for v in store.versions("m")] == [1, 3]


def test_unknown_model_and_version_are_not_found(tmp_path: Path) -> None:
    write_lstm_model(tmp_path, "m", 1)
    store = ModelStore(tmp_path, _loader)
    store.scan()
    with pytest.raises(ModelNotFound, match="unknown model 'other'"):
        store.get_ready("other")
    with pytest.raises(ModelNotFound, match="no version 2"):
        store.get_ready("m", "2")
    with pytest.raises(ModelNotFound, match="positive integers"):
        store.get_ready("m", "latest")


def test_versions_added_and_removed_are_followed_on_rescan(tmp_path: Path) -> None:
    write_lstm_model(tmp_path, "m", 1)
    store = ModelStore(tmp_path, _loader)
    store.scan()
    write_lstm_model(tmp_path, "m", 2)
    write_embedding_model(tmp_path, "e", 1)
    store.scan()
    assert store.get_ready("m").version == 2
    assert store.names() == ["e", "m"]
    shutil.rmtree(tmp_path / "m" / "2")
    store.scan()
    assert store.get_ready("m").version == 1


def test_incomplete_and_hidden_directories_are_not_versions(tmp_path: Path) -> None:
    write_lstm_model(tmp_path, "m", 1)
    (tmp_path / "m" / "2").mkdir()  # no files yet: an export in progress writes elsewhere, but be safe
    partial = write_lstm_model(tmp_path, "m", 3)
    (partial / MODEL_FILE).unlink()
    write_lstm_model(tmp_path, ".tmp-export", 1)
    store = ModelStore(tmp_path, _loader)
    store.scan()
    assert store.names() == ["m"]
    assert [v.version for v in store.versions("m")] == [1]


def test_a_version_that_fails_to_load_is_not_ready_and_says_why(tmp_path: Path) -> None:
    write_lstm_model(tmp_path, "m", 1)
    broken = write_lstm_model(tmp_path, "m", 2)
    (broken / "signature.json").write_text("{not json")
    store = ModelStore(tmp_path, _loader)
    store.scan()
    # The broken version 2 does not hide the good version 1.
    assert store.get_ready("m").version == 1
    with pytest.raises(ModelNotReady, match="version 2 is not ready: cannot read"):
        store.get_ready("m", "2")


def test_a_broken_config_yaml_makes_the_model_unavailable_until_fixed(tmp_path: Path) -> None:
    write_lstm_model(tmp_path, "m", 1)
    config = tmp_path / "m" / "config.yaml"
    config.write_text("max_batch_size: 0\nmax_sessoins: 3\n")
    store = ModelStore(tmp_path, _loader)
    store.scan()
    with pytest.raises(ModelNotReady, match=r"config.yaml: max_batch_size: Input should be greater than or equal to 1 "
                       r"\(allowed: 1 to 65536\), got 0; max_sessoins: Extra inputs are not permitted"):  # fmt: skip
        store.get_ready("m")
    config.write_text("max_batch_size: 8\nmax_sequence_idle: 30\n")
    store.scan()
    ready = store.get_ready("m")
    assert ready.config.max_batch_size == 8 and ready.config.max_sequence_idle == 30


def test_a_removed_version_closes_its_runner_once_and_a_readded_one_gets_a_new_runner(tmp_path: Path) -> None:
    write_lstm_model(tmp_path, "m", 1)
    write_lstm_model(tmp_path, "m", 2)
    store = ModelStore(tmp_path, _loader)
    store.scan()
    first = store.get_ready("m", "2").runner
    shutil.rmtree(tmp_path / "m" / "2")
    store.scan()
    store.scan()
    assert first.closed == 1
    write_lstm_model(tmp_path, "m", 2)
    store.scan()
    second = store.get_ready("m", "2").runner
    assert second is not first and second.closed == 0
    store.close()
    assert [(r.version, r.closed) for r in Runner.made] == [(1, 1), (2, 1), (2, 1)]
    assert store.names() == []


def test_a_config_change_reaches_the_runner_once(tmp_path: Path) -> None:
    write_lstm_model(tmp_path, "m", 1)
    config = tmp_path / "m" / "config.yaml"
    config.write_text("max_batch_size: 4\n")
    store = ModelStore(tmp_path, _loader)
    store.scan()
    runner = store.get_ready("m").runner
    store.scan()
    config.write_text("max_batch_size: 8\n")
    store.scan()
    store.scan()
    assert [c.max_batch_size for c in runner.configs] == [4, 8]


def test_a_draining_version_unloads_when_its_last_session_is_gone(tmp_path: Path) -> None:
    write_lstm_model(tmp_path, "m", 1)
    write_lstm_model(tmp_path, "m", 2)
    sessions = {("m", 1): 1}
    store = ModelStore(tmp_path, _loader, drain_seconds=60, in_use=lambda n, v: sessions.get((n, v), 0) > 0)
    store.scan()
    old = store.get_ready("m", "1").runner
    shutil.rmtree(tmp_path / "m" / "1")
    store.scan()
    assert store.pinned("m", 1).runner is old and old.closed == 0  # a session still runs on it
    sessions.clear()
    store.scan()
    assert old.closed == 1
    with pytest.raises(ModelNotFound, match="was removed from the store"):
        store.pinned("m", 1)


def test_a_draining_version_whose_sessions_are_unknown_unloads_after_the_idle_time(tmp_path: Path) -> None:
    write_lstm_model(tmp_path, "m", 1)
    store = ModelStore(tmp_path, _loader, drain_seconds=0.2)
    store.scan()
    old = store.get_ready("m").runner
    shutil.rmtree(tmp_path / "m" / "1")
    store.scan()
    for _ in range(3):  # each step on it pushes the unload back
        time.sleep(0.1)
        store.pinned("m", 1)
        store.scan()
    assert old.closed == 0
    time.sleep(0.25)
    store.scan()
    assert old.closed == 1
