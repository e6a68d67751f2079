"""Limits that parsing itself must hold: JSON nesting depth and tensor dimensions, each a clean 400
(INVALID_ARGUMENT) that says which limit, never a 500 from the parser or NumPy underneath."""

from __future__ import annotations

import json

import httpx
import pytest

from helpers.server import RunningServer
from seqserve.errors import InvalidInput
from seqserve.grpc import converters
from seqserve.grpc.generated import grpc_service_pb2 as pb
from seqserve.rest.wire import MAX_JSON_DEPTH
from seqserve.shapes import MAX_DIMENSIONS


def _post(server: RunningServer, path: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"http://{server.http_url}{path}", content=body, headers=headers, timeout=30)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "where",
    [
        '{"inputs": [{"name": "reading", "datatype": "FP32", "shape": [1], "data": %s}]}',
        '{"id": "x", "parameters": {"p": %s}, "inputs": []}',
        "%s",
    ],
    ids=["data", "parameters", "whole-body"],
)
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 2, 1_000, 100_000])
def test_deeply_nested_json_is_a_400_naming_the_depth_limit(
    example_server: RunningServer, where: str, depth: int
) -> None:
    body = (where % _nested(depth)).encode()
    for path in ("/v2/models/sensor/infer", "/v2/models/sensor/sessions"):
        response = _post(example_server, path, body)
        assert response.status_code == 400, response.text
        assert f"nested more than {MAX_JSON_DEPTH} levels deep" in response.json()["error"]


def test_json_nested_exactly_to_the_limit_is_parsed(example_server: RunningServer) -> None:
    # The body's object is level 0, `parameters` level 1, the lists levels 2 to MAX_JSON_DEPTH.
    lists = MAX_JSON_DEPTH - 1
    body = '{"parameters": {"p": ' + _nested(lists) + '}, "inputs": []}'
    response = _post(example_server, "/v2/models/sensor/infer", body.encode())
    assert response.status_code == 400  # for the missing input, not for the nesting
    assert "expects input(s) 'reading'" in response.json()["error"]


def test_json_data_nested_deeper_than_numpy_allows_is_a_400(example_server: RunningServer) -> None:
    data = json.loads("[" * 70 + "1.0" + "]" * 70)
    body = {"inputs": [{"name": "reading", "datatype": "FP32", "shape": [1], "data": data}]}
    response = _post(example_server, "/v2/models/sensor/infer", json.dumps(body).encode())
    assert response.status_code == 400
    assert "reading" in response.json()["error"]


def _too_many_dims(datatype: str, data: object) -> dict[str, object]:
    return {"inputs": [{"name": "reading", "datatype": datatype, "shape": [1] * (MAX_DIMENSIONS + 1), "data": data}]}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/models/sensor/infer", _too_many_dims("FP32", [1.0])),
        ("/v2/models/sensor/infer", _too_many_dims("BYTES", ["a"])),
        ("/v2/models/sensor/sessions", _too_many_dims("FP32", [1.0])),
    ],
    ids=["json", "json-bytes", "session"],
)
def test_shape_with_too_many_dimensions_is_a_400(example_server: RunningServer, path: str, body: dict) -> None:
    response = _post(example_server, path, json.dumps(body).encode())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "'reading'" in error and f"{MAX_DIMENSIONS + 1} dimensions" in error and f"at most {MAX_DIMENSIONS}" in error


def test_binary_tensor_with_too_many_dimensions_is_a_400(example_server: RunningServer) -> None:
    head = json.dumps(
        {"inputs": [{"name": "reading", "datatype": "FP32", "shape": [1] * 65, "parameters": {"binary_data_size": 4}}]}
    ).encode()
    response = _post(
        example_server,
        "/v2/models/sensor/infer",
        head + b"\0\0\0\0",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert response.status_code == 400, response.text
    assert f"at most {MAX_DIMENSIONS}" in response.json()["error"]


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_grpc_tensor_with_too_many_dimensions_is_invalid_input(raw: bool) -> None:
    request = pb.ModelInferRequest(model_name="sensor")
    tensor = request.inputs.add(name="reading", datatype="FP32", shape=[1] * (MAX_DIMENSIONS + 1))
    if raw:
        request.raw_input_contents.append(b"\0\0\0\0")
    else:
        tensor.contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInput, match=f"at most {MAX_DIMENSIONS}"):
        converters.infer_request_from_proto(request)


@pytest.mark.parametrize("shape", [[2**32, 2**32], [2**63 - 1, 2], [3, 2**62, 4]], ids=str)
@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed"])
def test_grpc_shape_whose_element_count_overflows_is_invalid_input(shape: list[int], raw: bool) -> None:
    # NumPy's int64 product wraps: [2**32, 2**32] would count 0 elements and pass an empty tensor on.
    request = pb.ModelInferRequest(model_name="sensor")
    request.inputs.add(name="reading", datatype="FP32", shape=shape)
    if raw:
        request.raw_input_contents.append(b"")
    with pytest.raises(InvalidInput, match="'reading'"):
        converters.infer_request_from_proto(request)


@pytest.mark.parametrize("shape", [[0, 2**62], [0, 10**30], [2**70]], ids=str)
def test_empty_tensor_with_a_huge_dimension_is_a_400(example_server: RunningServer, shape: list[int]) -> None:
    # NumPy refuses even an empty array whose other dimensions multiply past its size limit.
    body = {"inputs": [{"name": "reading", "datatype": "FP32", "shape": shape, "data": []}]}
    response = _post(example_server, "/v2/models/sensor/infer", json.dumps(body).encode())
    assert response.status_code == 400, response.text
    assert "describes more than 2**60 elements" in response.json()["error"]
