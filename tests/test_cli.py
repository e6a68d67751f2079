"""`seqserve export` as a user runs it: a report on success; one line on stderr and exit 1 on a bad file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras

from seqserve.store.signature import Signature


def _seqserve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seqserve.cli", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_export_writes_a_version_and_prints_a_report(tmp_path: Path) -> None:
    inputs = keras.Input(shape=(None, 3), name="x")
    keras.Model(inputs, keras.layers.GRU(4, name="gru")(inputs)).save(tmp_path / "m.keras")
    store = tmp_path / "store"
    for expected_version in ("1", "2"):
        done = _seqserve("export", str(tmp_path / "m.keras"), "--name", "m", "--store", str(store), "--stateful")
        assert done.returncode == 0, done.stderr
        assert "GRU" in done.stdout and f"m/{expected_version}" in done.stdout
    signature = Signature.read(store / "m" / "2")
    assert signature.stateful and [s.name for s in signature.states] == ["gru.h"]


def test_export_of_a_bad_file_fails_with_one_line_and_leaves_the_store_untouched(tmp_path: Path) -> None:
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"PK\x03\x04 this is no zip archive")
    store = tmp_path / "store"
    done = _seqserve("export", str(bad), "--name", "m", "--store", str(store))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("seqserve export: error:") and "broken.keras" in lines[0]
    assert not (store / "m").exists() or not any((store / "m").iterdir())


def test_exporting_loads_neither_the_grpc_stack_nor_the_server() -> None:
    probe = (
        "import sys, seqserve.cli, seqserve.export, seqserve.reference\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('grpc', 'fastapi', 'uvicorn')}))\n"
        "serving = ('seqserve.dataplane', 'seqserve.rest', 'seqserve.grpc')\n"
        "print(sorted(m for m in sys.modules if m.startswith(serving)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.splitlines() == ["[]", "[]"]


def test_serve_refuses_an_out_of_range_setting_with_one_line_naming_it(tmp_path: Path) -> None:
    done = _seqserve("serve", "--store", str(tmp_path), "--http-port", "-1", "--max-sequence-idle", "-3")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("seqserve serve: error: invalid settings: ")
    assert "SEQSERVE_HTTP_PORT: Input should be greater than or equal to 0" in line
    assert "SEQSERVE_MAX_SEQUENCE_IDLE: Input should be greater than or equal to 0" in line


def test_settings_may_come_from_a_secrets_directory_the_environment_wins(tmp_path: Path) -> None:
    from seqserve.config import Settings

    (tmp_path / "seqserve_sessions").write_text("redis://from-a-secret:6379/0")
    assert Settings(_secrets_dir=str(tmp_path)).sessions == "redis://from-a-secret:6379/0"
    assert Settings(_secrets_dir=str(tmp_path), sessions="memory").sessions == "memory"
