"""A real tritonclient.grpc drives a real `seqserve serve`: health, metadata, inference, streaming, errors.

Every output must equal a direct ONNX Runtime run of the same model exactly: the gRPC front end
moves bytes, it must never change a value.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from helpers.onnx_models import run_directly
from helpers.server import RunningServer

STREAM_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.grpc_url) as c:
        yield c


def _x(batch: int = 2, steps: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, steps, 3)).astype(np.float32)


def _input(name: str, data: np.ndarray, datatype: str) -> triton.InferInput:
    tensor = triton.InferInput(name, list(data.shape), datatype)
    tensor.set_data_from_numpy(data)
    return tensor


def _status(error: InferenceServerException) -> str:
    return error.status() or ""


# -- health and metadata ---------------------------------------------------------------------------


def test_server_is_live_and_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()


def test_models_are_ready_by_name_and_by_version(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready("lstm")
    assert client.is_model_ready("lstm", "1")
    assert client.is_model_ready("embed")


def test_unknown_model_readiness_is_not_found(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.is_model_ready("no-such-model")
    assert _status(caught.value) == "StatusCode.NOT_FOUND"
    assert "no-such-model" in caught.value.message()


def test_server_metadata_names_seqserve(client: triton.InferenceServerClient) -> None:
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "seqserve"
    assert metadata["version"]
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_lists_the_signature(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("lstm", as_json=True)
    assert metadata["name"] == "lstm"
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    # as_json renders int64 as strings, as protobuf's JSON mapping does.
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "-1", "3"]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in metadata["outputs"]] == [
        ("last", "FP32", ["-1", "4"]),
        ("sequence", "FP32", ["-1", "-1", "4"]),
    ]


def test_unknown_model_metadata_is_not_found(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("no-such-model")
    assert _status(caught.value) == "StatusCode.NOT_FOUND"


def test_rpcs_seqserve_does_not_serve_are_unimplemented(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.get_system_shared_memory_status()
    assert _status(caught.value) == "StatusCode.UNIMPLEMENTED"


# -- inference -----------------------------------------------------------------------------------


def test_fp32_infer_equals_a_direct_onnx_runtime_run(client: triton.InferenceServerClient, lstm_dir: Path) -> None:
    x = _x()
    result = client.infer("lstm", [_input("x", x, "FP32")], request_id="req-42")
    expected = run_directly(lstm_dir, {"x": x})
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("lstm", "1", "req-42")
    np.testing.assert_array_equal(result.as_numpy("last"), expected["last"])
    np.testing.assert_array_equal(result.as_numpy("sequence"), expected["sequence"])
    assert result.as_numpy("last").dtype == np.float32


def test_int64_infer_equals_a_direct_onnx_runtime_run(client: triton.InferenceServerClient, embed_dir: Path) -> None:
    tokens = np.array([[1, 2, 3, 9], [0, 0, 4, 5], [7, 7, 7, 7]], dtype=np.int64)
    result = client.infer("embed", [_input("tokens", tokens, "INT64")])
    np.testing.assert_array_equal(result.as_numpy("score"), run_directly(embed_dir, {"tokens": tokens})["score"])


def test_requested_outputs_are_the_only_ones_returned(client: triton.InferenceServerClient, lstm_dir: Path) -> None:
    x = _x(batch=3, steps=2, seed=1)
    result = client.infer("lstm", [_input("x", x, "FP32")], outputs=[triton.InferRequestedOutput("sequence")])
    assert [o.name for o in result.get_response().outputs] == ["sequence"]
    assert result.as_numpy("last") is None
    np.testing.assert_array_equal(result.as_numpy("sequence"), run_directly(lstm_dir, {"x": x})["sequence"])


def test_explicit_version_is_served(client: triton.InferenceServerClient) -> None:
    result = client.infer("lstm", [_input("x", _x(), "FP32")], model_version="1")
    assert result.get_response().model_version == "1"


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "version"), [("no-such-model", ""), ("lstm", "7")], ids=["unknown-model", "unknown-version"]
)
def test_unknown_model_or_version_is_not_found(client: triton.InferenceServerClient, model: str, version: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer(model, [_input("x", _x(), "FP32")], model_version=version)
    assert _status(caught.value) == "StatusCode.NOT_FOUND"


@pytest.mark.parametrize(
    ("tensor", "words"),
    [
        (("y", _x(), "FP32"), ["unknown input 'y'", "'x'"]),
        (("x", _x().astype(np.float64), "FP64"), ["input 'x'", "FP64", "expected FP32"]),
        (("x", np.zeros((2, 5, 7), np.float32), "FP32"), ["input 'x'", "shape [2, 5, 7]", "3]"]),
        (("x", np.full((1, 2, 3), np.nan, np.float32), "FP32"), ["input 'x'", "NaN"]),
    ],
    ids=["wrong-name", "wrong-datatype", "wrong-shape", "nan"],
)
def test_bad_input_is_invalid_argument_naming_the_problem(
    client: triton.InferenceServerClient, tensor: tuple[str, np.ndarray, str], words: list[str]
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("lstm", [_input(*tensor)])
    assert _status(caught.value) == "StatusCode.INVALID_ARGUMENT"
    for word in words:
        assert word in caught.value.message()


def test_unknown_requested_output_is_invalid_argument(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("lstm", [_input("x", _x(), "FP32")], outputs=[triton.InferRequestedOutput("nope")])
    assert _status(caught.value) == "StatusCode.INVALID_ARGUMENT"
    assert "unknown output 'nope'" in caught.value.message()


def test_oversize_request_is_resource_exhausted_and_the_server_goes_on(client: triton.InferenceServerClient) -> None:
    big = np.zeros((1, 10_000, 3), np.float32)  # 120 kB, over the server's 64 KiB limit
    with pytest.raises(InferenceServerException) as caught:
        client.infer("lstm", [_input("x", big, "FP32")])
    assert _status(caught.value) == "StatusCode.RESOURCE_EXHAUSTED"
    assert client.infer("lstm", [_input("x", _x(), "FP32")]).as_numpy("last") is not None


# -- streaming -------------------------------------------------------------------------------------


class _Stream:
    """Collects the callbacks of tritonclient's stream: (result, error) per request, in arrival order."""

    def __init__(self) -> None:
        self.answers: queue.Queue[tuple[triton.InferResult | None, InferenceServerException | None]] = queue.Queue()

    def __call__(self, result: triton.InferResult | None, error: InferenceServerException | None) -> None:
        self.answers.put((result, error))

    def take(self, count: int) -> list[tuple[triton.InferResult | None, InferenceServerException | None]]:
        return [self.answers.get(timeout=STREAM_TIMEOUT) for _ in range(count)]


@pytest.fixture
def stream(client: triton.InferenceServerClient) -> Iterator[_Stream]:
    collected = _Stream()
    client.start_stream(callback=collected)
    yield collected
    client.stop_stream()


def test_stream_answers_every_request_in_order_as_unary_does(
    client: triton.InferenceServerClient, stream: _Stream, lstm_dir: Path
) -> None:
    xs = [_x(batch=1 + k % 3, steps=1 + k, seed=k) for k in range(6)]
    for k, x in enumerate(xs):
        client.async_stream_infer("lstm", [_input("x", x, "FP32")], request_id=f"step-{k}")
    answers = stream.take(len(xs))
    assert [error for _, error in answers] == [None] * len(xs)
    assert [result.get_response().id for result, _ in answers] == [f"step-{k}" for k in range(len(xs))]
    for x, (result, _) in zip(xs, answers, strict=True):
        unary = client.infer("lstm", [_input("x", x, "FP32")])
        expected = run_directly(lstm_dir, {"x": x})
        for name in ("last", "sequence"):
            np.testing.assert_array_equal(result.as_numpy(name), unary.as_numpy(name))
            np.testing.assert_array_equal(result.as_numpy(name), expected[name])


def test_errors_inside_a_stream_arrive_as_error_responses_and_the_stream_goes_on(
    client: triton.InferenceServerClient, stream: _Stream, lstm_dir: Path
) -> None:
    x = _x(seed=3)
    good = [_input("x", x, "FP32")]
    client.async_stream_infer("lstm", good, request_id="a")
    client.async_stream_infer("lstm", [_input("y", x, "FP32")], request_id="b")
    client.async_stream_infer("no-such-model", good, request_id="c")
    client.async_stream_infer("lstm", [_input("x", x.astype(np.float64), "FP64")], request_id="d")
    client.async_stream_infer("lstm", good, request_id="e")
    answers = stream.take(5)

    errors = [error.message() if error else None for _, error in answers]
    assert errors[0] is None and errors[4] is None
    assert "unknown input 'y'" in errors[1]
    assert "no-such-model" in errors[2]
    assert "FP64" in errors[3] and "expected FP32" in errors[3]
    expected = run_directly(lstm_dir, {"x": x})["last"]
    for result, _ in (answers[0], answers[4]):
        np.testing.assert_array_equal(result.as_numpy("last"), expected)
    assert answers[4][0].get_response().id == "e"


# -- the wire, below tritonclient's helpers ----------------------------------------------------------
# tritonclient's own generated messages and stub (Triton's grpc_service.proto): proof that our
# field numbers and types are Triton's, for the typed contents tritonclient's helpers never send.


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def _decode(response: service_pb2.ModelInferResponse) -> dict[str, np.ndarray]:
    return {
        output.name: np.frombuffer(raw, dtype={"FP32": "<f4"}[output.datatype]).reshape(list(output.shape))
        for output, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def test_typed_contents_are_accepted_like_raw_ones(
    stub: service_pb2_grpc.GRPCInferenceServiceStub, lstm_dir: Path, embed_dir: Path
) -> None:
    pb = service_pb2
    x = _x(seed=5)
    request = pb.ModelInferRequest(model_name="lstm", id="typed")
    request.inputs.add(name="x", datatype="FP32", shape=x.shape).contents.fp32_contents.extend(x.ravel().tolist())
    response = stub.ModelInfer(request)
    assert response.id == "typed"
    expected = run_directly(lstm_dir, {"x": x})
    for name, value in _decode(response).items():
        np.testing.assert_array_equal(value, expected[name])

    tokens = np.array([[3, 1, 4, 1, 5]], dtype=np.int64)
    request = pb.ModelInferRequest(model_name="embed")
    request.inputs.add(name="tokens", datatype="INT64", shape=tokens.shape).contents.int64_contents.extend(
        tokens.ravel().tolist()
    )
    np.testing.assert_array_equal(
        _decode(stub.ModelInfer(request))["score"], run_directly(embed_dir, {"tokens": tokens})["score"]
    )


def test_raw_contents_of_the_wrong_byte_count_are_invalid_argument_naming_the_input(
    stub: service_pb2_grpc.GRPCInferenceServiceStub,
) -> None:
    request = service_pb2.ModelInferRequest(model_name="lstm")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 5, 3])
    request.raw_input_contents.append(_x().tobytes()[:-4])
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'x'" in caught.value.details() and "116 bytes" in caught.value.details()


def test_a_failed_stream_request_is_answered_with_its_id(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    pb = service_pb2
    bad = pb.ModelInferRequest(model_name="no-such-model", id="lost-1")
    good = pb.ModelInferRequest(model_name="lstm", id="fine-2")
    good.inputs.add(name="x", datatype="FP32", shape=[1, 1, 3])
    good.raw_input_contents.append(np.ones((1, 1, 3), np.float32).tobytes())
    answers = list(stub.ModelStreamInfer(iter([bad, good]), timeout=STREAM_TIMEOUT))
    assert [a.infer_response.id for a in answers] == ["lost-1", "fine-2"]
    assert "no-such-model" in answers[0].error_message
    assert answers[1].error_message == ""
