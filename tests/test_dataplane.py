"""The data plane validates every request against the signature and runs it from zero state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers.onnx_models import run_directly, write_embedding_model, write_lstm_model
from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.errors import InvalidInput, ModelNotFound
from seqserve.inference import InferRequest, RequestedOutput, Tensor
from seqserve.server import build_dataplane


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    write_lstm_model(root, "lstm", 1)
    write_embedding_model(root, "embed", 1)
    return root


@pytest.fixture(scope="module")
def dataplane(store: Path) -> Iterator[DataPlane]:
    plane = build_dataplane(Settings(store=store, device="cpu"))
    yield plane
    plane.store.close()


def _x(batch: int = 2, steps: int = 5) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((batch, steps, 3)).astype(np.float32)


async def test_outputs_equal_a_direct_onnx_runtime_run(dataplane: DataPlane, store: Path) -> None:
    x = _x()
    response = await dataplane.infer(InferRequest("lstm", id="req-7", inputs=[Tensor("x", "FP32", x)]))
    expected = run_directly(store / "lstm" / "1", {"x": x})
    assert response.id == "req-7"
    assert response.model_version == "1"
    assert [t.name for t in response.outputs] == ["last", "sequence"]
    for tensor in response.outputs:
        np.testing.assert_array_equal(tensor.data, expected[tensor.name])


async def test_only_requested_outputs_are_returned_in_requested_order(dataplane: DataPlane) -> None:
    request = InferRequest(
        "lstm",
        inputs=[Tensor("x", "FP32", _x())],
        outputs=[RequestedOutput("sequence"), RequestedOutput("last")],
    )
    response = await dataplane.infer(request)
    assert [t.name for t in response.outputs] == ["sequence", "last"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([Tensor("y", "FP32", _x())], "unknown input 'y' for model 'lstm'; expected 'x'"),
        ([], "expects input(s) 'x', not given"),
        ([Tensor("x", "FP64", _x().astype(np.float64))], "input 'x' has datatype FP64, expected FP32"),
        (
            [Tensor("x", "FP32", np.zeros((2, 5, 4), np.float32))],
            "has shape [2, 5, 4], expected [-1 (any), -1 (any), 3]",
        ),
        ([Tensor("x", "FP32", np.zeros((2, 3), np.float32))], "has shape [2, 3]"),
        ([Tensor("x", "FP32", np.zeros((2, 0, 3), np.float32))], "empty dimension"),
        ([Tensor("x", "FP32", _x()), Tensor("x", "FP32", _x())], "given more than once"),
    ],
)
async def test_bad_inputs_are_refused_with_what_was_expected(
    dataplane: DataPlane, inputs: list[Tensor], message: str
) -> None:
    with pytest.raises(InvalidInput) as error:
        await dataplane.infer(InferRequest("lstm", inputs=inputs))
    assert message in str(error.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
async def test_non_finite_values_are_refused_before_they_reach_a_state(dataplane: DataPlane, bad: float) -> None:
    x = _x()
    x[1, 2, 0] = bad
    with pytest.raises(InvalidInput, match=r"input 'x' holds a NaN or infinite value at index \[1, 2, 0\]"):
        await dataplane.infer(InferRequest("lstm", inputs=[Tensor("x", "FP32", x)]))


async def test_unknown_output_and_unknown_model_are_named(dataplane: DataPlane) -> None:
    with pytest.raises(InvalidInput, match="unknown output 'nope'"):
        await dataplane.infer(
            InferRequest("lstm", inputs=[Tensor("x", "FP32", _x())], outputs=[RequestedOutput("nope")])
        )
    with pytest.raises(ModelNotFound, match="unknown model 'missing'"):
        await dataplane.infer(InferRequest("missing", inputs=[]))


async def test_integer_inputs_and_metadata(dataplane: DataPlane) -> None:
    tokens = np.array([[1, 2, 3], [4, 5, 0]], dtype=np.int64)
    response = await dataplane.infer(InferRequest("embed", inputs=[Tensor("tokens", "INT64", tokens)]))
    np.testing.assert_allclose(response.outputs[0].data, [[1.2, 1.5], [1.8, 2.1]], rtol=1e-6)
    metadata = dataplane.catalog.model_metadata("lstm")
    assert metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, t.shape) for t in metadata.inputs] == [("x", "FP32", [-1, -1, 3])]
    assert dataplane.catalog.ready() and dataplane.catalog.model_ready("embed")


async def test_failures_and_requests_are_counted_per_model(dataplane: DataPlane) -> None:
    with pytest.raises(InvalidInput):
        await dataplane.infer(InferRequest("embed", inputs=[]))
    text = dataplane.metrics.exposition().decode()
    assert 'seqserve_inference_failures_total{model="embed",reason="InvalidInput",version="1"}' in text
