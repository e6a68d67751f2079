"""The V2 REST API driven by `tritonclient.http` against a real server: outputs equal a direct ORT run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from helpers.onnx_models import run_directly
from helpers.server import RunningServer

X = np.random.default_rng(7).standard_normal((2, 5, 3)).astype(np.float32)
TOKENS = np.array([[1, 2, 3, 9], [0, 0, 4, 5]], dtype=np.int64)


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.http_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def expected(store: Path) -> dict[str, np.ndarray]:
    return run_directly(store / "lstm" / "1", {"x": X})


def lstm_input(binary: bool, x: np.ndarray = X) -> triton.InferInput:
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    return tensor.set_data_from_numpy(x, binary_data=binary)


def test_server_is_live_and_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()


def test_server_metadata_announces_the_binary_tensor_extension(client: triton.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata["name"] == "seqserve"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_describes_the_signature(client: triton.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("lstm")
    assert metadata["name"] == "lstm"
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, -1, 3]}]
    assert [o["name"] for o in metadata["outputs"]] == ["last", "sequence"]
    assert client.get_model_metadata("lstm", model_version="1")["versions"] == ["1"]


def test_model_ready_is_true_for_a_loaded_model_and_false_for_an_unknown_one(
    client: triton.InferenceServerClient,
) -> None:
    assert client.is_model_ready("lstm")
    assert client.is_model_ready("lstm", model_version="1")
    assert not client.is_model_ready("no-such-model")
    assert not client.is_model_ready("lstm", model_version="9")


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
def test_lstm_outputs_equal_onnx_runtime(
    client: triton.InferenceServerClient, expected: dict[str, np.ndarray], binary_in: bool, binary_out: bool
) -> None:
    outputs = [triton.InferRequestedOutput(n, binary_data=binary_out) for n in ("last", "sequence")]
    result = client.infer("lstm", [lstm_input(binary_in)], outputs=outputs)
    for name in ("last", "sequence"):
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])
        is_binary = "binary_data_size" in (result.get_output(name).get("parameters") or {})
        assert is_binary == binary_out


def test_all_outputs_come_back_when_none_are_requested(
    client: triton.InferenceServerClient, expected: dict[str, np.ndarray]
) -> None:
    # tritonclient then sets the request parameter binary_data_output=true.
    result = client.infer("lstm", [lstm_input(True)])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["last", "sequence"]
    for name in ("last", "sequence"):
        assert result.get_output(name)["parameters"]["binary_data_size"] == expected[name].nbytes
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])


def test_only_requested_outputs_are_returned_in_the_requested_order(
    client: triton.InferenceServerClient, expected: dict[str, np.ndarray]
) -> None:
    outputs = [triton.InferRequestedOutput("sequence"), triton.InferRequestedOutput("last", binary_data=False)]
    result = client.infer("lstm", [lstm_input(False)], outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["sequence", "last"]
    only_last = client.infer("lstm", [lstm_input(True)], outputs=[triton.InferRequestedOutput("last")])
    assert [o["name"] for o in only_last.get_response()["outputs"]] == ["last"]
    np.testing.assert_array_equal(only_last.as_numpy("last"), expected["last"])


def test_request_id_is_echoed_with_the_model_version(client: triton.InferenceServerClient) -> None:
    result = client.infer("lstm", [lstm_input(True)], request_id="req-17")
    response = result.get_response()
    assert response["id"] == "req-17"
    assert (response["model_name"], response["model_version"]) == ("lstm", "1")


def test_a_named_version_is_served(client: triton.InferenceServerClient, expected: dict[str, np.ndarray]) -> None:
    result = client.infer("lstm", [lstm_input(True)], model_version="1")
    np.testing.assert_array_equal(result.as_numpy("last"), expected["last"])


@pytest.mark.parametrize("binary_in", [True, False], ids=["binary-in", "json-in"])
def test_int64_inputs_are_served(client: triton.InferenceServerClient, store: Path, binary_in: bool) -> None:
    tokens = triton.InferInput("tokens", list(TOKENS.shape), "INT64").set_data_from_numpy(TOKENS, binary_in)
    result = client.infer("embed", [tokens], outputs=[triton.InferRequestedOutput("score", binary_data=False)])
    np.testing.assert_array_equal(
        result.as_numpy("score"), run_directly(store / "embed" / "1", {"tokens": TOKENS})["score"]
    )


def test_plain_json_gets_a_plain_json_answer_and_nested_lists_are_accepted(
    base_url: str, expected: dict[str, np.ndarray]
) -> None:
    body = {"id": "nested", "inputs": [{"name": "x", "shape": list(X.shape), "datatype": "FP32", "data": X.tolist()}]}
    response = httpx.post(f"{base_url}/v2/models/lstm/infer", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in response.headers
    document = response.json()
    assert document["id"] == "nested"
    last = document["outputs"][0]
    assert (last["name"], last["datatype"], last["shape"]) == ("last", "FP32", [2, 4])
    np.testing.assert_array_equal(np.array(last["data"], dtype=np.float32).reshape(2, 4), expected["last"])


def test_binary_response_is_json_header_then_raw_little_endian_tensors(
    base_url: str, expected: dict[str, np.ndarray]
) -> None:
    header = (
        b'{"inputs":[{"name":"x","shape":[2,5,3],"datatype":"FP32","parameters":{"binary_data_size":120}}],'
        b'"outputs":[{"name":"last","parameters":{"binary_data":true}},{"name":"sequence"}]}'
    )
    response = httpx.post(
        f"{base_url}/v2/models/lstm/infer",
        content=header + X.astype("<f4").tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "content-type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    document = httpx.Response(200, content=response.content[:length]).json()
    last, sequence = document["outputs"]
    assert last["parameters"] == {"binary_data_size": 32}
    assert "data" not in last
    np.testing.assert_array_equal(np.frombuffer(response.content[length:], "<f4").reshape(2, 4), expected["last"])
    np.testing.assert_array_equal(np.array(sequence["data"], np.float32).reshape(2, 5, 4), expected["sequence"])
    assert len(response.content) == length + 32


def test_a_sequence_sent_one_step_at_a_time_continues_the_state(
    client: triton.InferenceServerClient, store: Path
) -> None:
    whole = run_directly(store / "stateful" / "1", {"x": X})["sequence"]
    steps = X.shape[1]
    for t in range(steps):
        result = client.infer(
            "stateful",
            [lstm_input(True, X[:, t : t + 1])],
            outputs=[triton.InferRequestedOutput("last")],
            sequence_id=4242,
            sequence_start=t == 0,
            sequence_end=t == steps - 1,
        )
        # ORT's LSTM runs one step at a time too, but its input GEMM batches timesteps: allow rounding.
        np.testing.assert_allclose(result.as_numpy("last"), whole[:, t], rtol=0, atol=1e-6)
    with pytest.raises(InferenceServerException, match="4242"):
        client.infer("stateful", [lstm_input(True, X[:, :1])], sequence_id=4242)
