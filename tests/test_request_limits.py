"""Limits on one request's size, the same over REST and gRPC: timesteps, elements, tensors and the
length of a string sequence id. Each refusal is 400 / INVALID_ARGUMENT naming the limit, the value
and the setting that raises it; ids are never echoed whole in errors or logs."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest

from helpers.onnx_models import write_lstm_model
from helpers.server import RunningServer, running_server
from seqserve.grpc.generated import grpc_service_pb2 as pb
from seqserve.grpc.generated.grpc_service_pb2_grpc import GRPCInferenceServiceStub

LIMITS = {
    "SEQSERVE_MAX_TIMESTEPS_PER_REQUEST": "50",
    "SEQSERVE_MAX_ELEMENTS_PER_REQUEST": "600",
    "SEQSERVE_MAX_INPUTS_PER_REQUEST": "8",
    "SEQSERVE_MAX_SEQUENCE_ID_LENGTH": "100",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    store = tmp_path_factory.mktemp("limits") / "models"
    write_lstm_model(store, "m", 1, stateful=True)
    # A model's config.yaml raises the limit for that model alone.
    write_lstm_model(store, "long", 1, stateful=True)
    (store / "long" / "config.yaml").write_text("max_timesteps_per_request: 80\nmax_elements_per_request: 1000\n")
    with running_server(store, env=LIMITS) as running:
        yield running


def _body(batch: int, steps: int, **parameters: Any) -> dict[str, Any]:
    x = {"name": "x", "datatype": "FP32", "shape": [batch, steps, 3], "data": [0.5] * (batch * steps * 3)}
    return {"inputs": [x], "parameters": parameters}


def _infer(server: RunningServer, body: dict[str, Any], model: str = "m") -> httpx.Response:
    return httpx.post(f"http://{server.http_url}/v2/models/{model}/infer", json=body, timeout=30)


def _refused(response: httpx.Response, *words: str) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    for word in words:
        assert word in error, error
    return str(error)


def test_timesteps_past_the_limit_are_refused_naming_the_setting(server: RunningServer) -> None:
    assert _infer(server, _body(1, 50)).status_code == 200
    _refused(_infer(server, _body(1, 51)), "51 timesteps", "at most 50", "max_timesteps_per_request")
    _refused(_infer(server, _body(1, 51, sequence_id=7, sequence_start=True)), "max_timesteps_per_request")


def test_a_models_config_yaml_raises_its_own_limits(server: RunningServer) -> None:
    assert _infer(server, _body(1, 80), model="long").status_code == 200
    _refused(_infer(server, _body(1, 81), model="long"), "at most 80")


def test_elements_past_the_limit_are_refused_states_included(server: RunningServer) -> None:
    _refused(_infer(server, _body(5, 41)), "615 elements", "at most 600", "max_elements_per_request")
    body = _body(40, 5, sequence_id="e", sequence_start=True)  # 600 input elements, and states on top
    body["inputs"] += [
        {"name": state, "datatype": "FP32", "shape": [40, 4], "data": [0.0] * 160} for state in ("lstm.h", "lstm.c")
    ]
    _refused(_infer(server, body), "920 elements", "max_elements_per_request")


def test_too_many_tensors_are_refused(server: RunningServer) -> None:
    body = _body(1, 1)
    body["inputs"] *= 9
    _refused(_infer(server, body), "9 inputs", "at most 8", "max_inputs_per_request")


def test_a_long_sequence_id_is_refused_and_never_echoed_whole(server: RunningServer) -> None:
    long_id = "k" * 10_000
    error = _refused(_infer(server, _body(1, 1, sequence_id=long_id, sequence_start=True)), "10000 characters")
    assert "max_sequence_id_length" in error and "k" * 40 not in error
    near = "n" * 100  # at the limit: accepted, but an unknown one is named by a prefix only
    response = _infer(server, _body(1, 1, sequence_id=near))
    assert response.status_code == 404 and "n" * 40 not in response.text, response.text
    assert "k" * 40 not in server.log() and "n" * 40 not in server.log()


def test_grpc_counts_the_inputs_before_decoding_them(server: RunningServer) -> None:
    # 200,000 inputs that could not even be decoded: the count is what must be refused.
    request = pb.ModelInferRequest(model_name="m")
    for _ in range(200_000):
        request.inputs.add(name="x", datatype="FP32", shape=[1, 1, 3])
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "200000 inputs" in caught.value.details() and "max_inputs_per_request" in caught.value.details()
        (answer,) = stub.ModelStreamInfer(iter([request]), timeout=30)
        assert "max_inputs_per_request" in answer.error_message


def test_grpc_refuses_a_long_sequence_id(server: RunningServer) -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1, 3]).contents.fp32_contents.extend([0.1] * 3)
    request.parameters["sequence_id"].string_param = "z" * 5000
    request.parameters["sequence_start"].bool_param = True
    with grpc.insecure_channel(server.grpc_url) as channel, pytest.raises(grpc.RpcError) as caught:
        GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_sequence_id_length" in caught.value.details() and "z" * 40 not in caught.value.details()
