"""The fixtures the GPU tests run (tests/fixtures/gpu) hold what Keras computes, and their `--target
cuda` exports match it on the CPU: so on a GPU only the GPU can be at fault."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from helpers.gpu_fixtures import NAMES, export_and_load, keras_io, run
from seqserve.runtime.providers import CPU


def test_every_gpu_fixture_is_there() -> None:
    expected = ["bidirectional_gru", "conv_lstm2d", "gru", "gru_reset_before", "lstm", "lstm_hard_sigmoid"]
    expected += ["masked_lstm", "simple_rnn", "stacked_cells"]
    assert sorted(NAMES) == sorted(expected)


@pytest.mark.parametrize("name", NAMES)
def test_fixture_output_is_what_keras_computes(name: str) -> None:
    x, y = keras_io(name)
    model = keras.saving.load_model(Path(__file__).resolve().parents[1] / "fixtures" / "gpu" / f"{name}.keras")
    np.testing.assert_allclose(np.asarray(model.predict(x, verbose=0)), y, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_cuda_target_export_matches_keras_on_the_cpu(name: str, tmp_path: Path) -> None:
    x, y = keras_io(name)
    model = export_and_load(name, tmp_path, [(CPU, {})])
    assert np.max(np.abs(run(model, x) - y)) <= 1e-5
