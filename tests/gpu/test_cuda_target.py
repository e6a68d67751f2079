"""--target cuda on a real GPU: every compute node of each fixture model (LSTM/GRU op, Scan, Conv,
MatMul) runs on the CUDA EP, as seqserve's own placement report says, and the outputs match what
Keras computed on the CPU (tests/fixtures/gpu) to 1e-5 with TF32 off."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.gpu_fixtures import NAMES, export_and_load, keras_io, run
from seqserve.runtime.providers import CPU, CUDA, resolve_providers


@pytest.mark.parametrize("name", NAMES)
def test_cuda_target_runs_every_compute_node_on_the_gpu_and_matches_keras(name: str, tmp_path: Path) -> None:
    x, y = keras_io(name)
    model = export_and_load(name, tmp_path, resolve_providers("cuda"))
    assert model.on_cuda and model.placement is not None
    assert model.placement.compute_on(CUDA), f"no compute node on CUDA: {model.placement.nodes}"
    assert model.placement.compute_on(CPU) == [], model.placement.summary()
    assert np.max(np.abs(run(model, x) - y)) <= 1e-5
