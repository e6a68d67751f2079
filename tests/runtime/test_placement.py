"""Where ONNX Runtime runs each node is measured at load, reported in /metrics, and a model asked to
run on CUDA is refused when ORT would run it on the CPU instead."""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnxruntime as ort
import pytest

from helpers.onnx_models import write_lstm_model
from seqserve.config import Settings
from seqserve.errors import ModelNotReady
from seqserve.runtime.providers import CPU, CUDA
from seqserve.runtime.session import OrtModel, session_options
from seqserve.server import build_dataplane
from seqserve.store.signature import MODEL_FILE, Signature


def _model(directory: Path, providers: list[tuple[str, dict[str, str]]], first_run: bool = True) -> OrtModel:
    return OrtModel(
        directory / MODEL_FILE, Signature.read(directory), providers, session_options(1, 1, False), first_run
    )


def test_the_first_run_says_where_every_node_ran(tmp_path: Path) -> None:
    profiles = set(Path(tempfile.gettempdir()).glob("seqserve-placement-*"))
    model = _model(write_lstm_model(tmp_path, "m", 1), [(CPU, {})])
    assert model.placement is not None
    ops = sorted(op for op, _ in model.placement.nodes.values())
    assert ops == [
        "Identity",
        "LSTM",
        "Squeeze",
        "Squeeze",
        "Squeeze",
        "Transpose",
        "Transpose",
        "Unsqueeze",
        "Unsqueeze",
    ]
    assert {provider for _, provider in model.placement.nodes.values()} == {CPU}
    assert model.placement.compute_on(CPU) == ["LSTM"] and model.placement.compute_on(CUDA) == []
    assert model.placement.summary() == f"9 on {CPU}"
    assert set(Path(tempfile.gettempdir()).glob("seqserve-placement-*")) == profiles  # read and removed


def test_without_warm_up_a_cpu_model_is_not_run_at_load(tmp_path: Path) -> None:
    assert _model(write_lstm_model(tmp_path, "m", 1), [(CPU, {})], first_run=False).placement is None


@pytest.mark.skipif(CUDA in ort.get_available_providers(), reason="this ONNX Runtime has the CUDA EP")
def test_a_model_that_would_fall_back_to_the_cpu_under_cuda_is_refused(tmp_path: Path) -> None:
    """ORT without a usable CUDA EP quietly runs a session asked for CUDA on the CPU; seqserve says no."""
    with pytest.raises(ModelNotReady, match="did not give this model the CUDA execution provider"):
        _model(write_lstm_model(tmp_path, "m", 1), [(CUDA, {"use_tf32": "0"}), (CPU, {})])


async def test_metrics_report_placement_until_the_version_is_unloaded(tmp_path: Path) -> None:
    write_lstm_model(tmp_path, "m", 1)
    plane = build_dataplane(Settings(store=tmp_path, device="cpu"))
    try:
        line = f'seqserve_model_nodes{{model="m",op="LSTM",provider="{CPU}",version="1"}} 1.0'
        assert line in plane.metrics.exposition().decode().splitlines()
        plane.store.close()
        assert "seqserve_model_nodes{" not in plane.metrics.exposition().decode()
    finally:
        await plane.close()
