"""Every setting is range-checked, in `Settings` and in a model's config.yaml alike: finite, positive
where it must be, below a sane maximum; the CLI refuses a bad one at start with one line."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from helpers.onnx_models import write_lstm_model
from seqserve.config import ModelDefaults, Settings
from seqserve.errors import ModelNotReady
from seqserve.store.model_config import ModelConfig
from seqserve.store.model_store import ModelStore


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_queue_delay", math.inf),
        ("max_queue_delay", 1e9),
        ("max_queue_delay", math.nan),
        ("sequence_batch_delay", 1e9),
        ("max_sequence_idle", 1e300),
        ("store_poll_seconds", math.inf),
        ("shutdown_grace", 1e12),
        ("session_store_timeout", math.inf),
        ("session_eviction_grace", math.nan),
        ("max_batch_size", 10**12),
        ("max_request_bytes", 2**62),
        ("max_timesteps_per_request", 0),
        ("max_elements_per_request", 2**62),
        ("max_inputs_per_request", 0),
        ("max_sequence_id_length", 0),
    ],
)
def test_settings_refuse_values_out_of_range(setting: str, value: float) -> None:
    with pytest.raises(ValidationError, match=setting):
        Settings(**{setting: value})


def test_every_number_setting_has_bounds_on_both_sides() -> None:
    for name, field in Settings.model_fields.items():
        if field.annotation not in (int, float):
            continue
        bounds = {type(m).__name__ for m in field.metadata}
        assert bounds & {"Ge", "Gt"} and bounds & {"Le", "Lt"}, f"{name} is not bounded: {field.metadata}"


def test_config_yaml_takes_the_bounds_of_the_server_settings() -> None:
    """The bounds are declared once, so config.yaml and the server's settings cannot drift apart."""
    for name, field in ModelDefaults.model_fields.items():
        if field.annotation not in (int, float):
            continue
        (high,) = [m.le for m in field.metadata if hasattr(m, "le")]
        ModelConfig(**{name: high})
        Settings(**{name: high})
        for refusing in (ModelConfig, Settings):
            with pytest.raises(ValidationError, match=name):
                refusing(**{name: high * 2})


@pytest.mark.parametrize(
    "line", ["max_queue_delay: .inf", "max_queue_delay: 1e9", "max_sequence_idle: 1e300", "max_sessions: 1e30"]
)
def test_a_config_yaml_value_out_of_range_makes_its_model_unavailable_naming_the_range(
    tmp_path: Path, line: str
) -> None:
    write_lstm_model(tmp_path, "m", 1)
    (tmp_path / "m" / "config.yaml").write_text(line + "\n")
    store = ModelStore(tmp_path, lambda *args: object())
    store.scan()
    setting = line.split(":")[0]
    with pytest.raises(ModelNotReady, match=rf"config\.yaml: {setting}: .*allowed: "):
        store.get_ready("m")


def _serve(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "seqserve.cli", "serve", "--store", str(tmp_path), "--http-port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, **env},
    )


def test_serve_refuses_an_infinite_delay_with_one_line_naming_the_setting_and_its_range(tmp_path: Path) -> None:
    done = _serve(tmp_path, SEQSERVE_MAX_QUEUE_DELAY="inf", SEQSERVE_MAX_SEQUENCE_IDLE="1e300")
    assert done.returncode != 0
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("seqserve serve: error: invalid settings: ")
    assert "SEQSERVE_MAX_QUEUE_DELAY" in line and "allowed: 0 to 5" in line
    assert "SEQSERVE_MAX_SEQUENCE_IDLE" in line and "allowed: 0 to 604800" in line
