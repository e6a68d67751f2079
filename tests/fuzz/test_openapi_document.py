"""The OpenAPI document describes every V2 body completely: it is what schemathesis fuzzes from."""

from __future__ import annotations

import httpx
import pytest

from helpers.server import RunningServer
from seqserve.datatypes import V2_DATATYPES
from seqserve.shapes import MAX_DIMENSIONS


@pytest.fixture(scope="module")
def document(example_server: RunningServer) -> dict:
    return httpx.get(f"http://{example_server.http_url}/openapi.json", timeout=10).json()


def _schema(document: dict, ref: str) -> dict:
    return document["components"]["schemas"][ref.rsplit("/", 1)[-1]]


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/v2/models/{name}/infer", "post"),
        ("/v2/models/{name}/versions/{version}/infer", "post"),
        ("/v2/models/{name}/sessions", "post"),
        ("/v2/models/{name}/versions/{version}/sessions", "post"),
        ("/v2/models/{name}/sessions/{session_id}", "put"),
    ],
)
def test_every_body_taking_endpoint_describes_its_request_and_answers(document: dict, path: str, method: str) -> None:
    operation = document["paths"][path][method]
    content = operation["requestBody"]["content"]
    assert _schema(document, content["application/json"]["schema"]["$ref"])["title"] == "InferRequestHeader"
    assert content["application/octet-stream"]["schema"]["format"] == "binary"
    ok = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/InferResponse")
    for status in ("400", "404", "413", "503", "default"):
        assert operation["responses"][status]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


def test_request_tensors_are_described_down_to_their_data(document: dict) -> None:
    tensor = document["components"]["schemas"]["RequestInput"]["properties"]
    assert tensor["datatype"]["enum"] == list(V2_DATATYPES)
    assert tensor["shape"]["maxItems"] == MAX_DIMENSIONS and tensor["shape"]["items"]["minimum"] == 0
    assert tensor["data"]["type"] == "array"
    assert "binary_data_size" in tensor["parameters"]["properties"]
    request = document["components"]["schemas"]["InferRequest"]["properties"]
    assert {"sequence_id", "sequence_start", "sequence_end", "sequence_step"} <= set(
        request["parameters"]["properties"]
    )


def test_no_operation_lists_a_422_the_server_never_sends(document: dict) -> None:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            assert "422" not in operation["responses"], (method, path)
            assert "default" in operation["responses"], (method, path)
