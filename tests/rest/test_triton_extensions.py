"""Triton's model configuration and statistics extensions over REST, driven by tritonclient.http.

The configuration must say what the server really does with each model (its signature, its
config.yaml over the server's settings); the statistics must move by exactly what a test sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from helpers.onnx_models import FEATURES, UNITS, write_embedding_model, write_lstm_model
from helpers.server import RunningServer, running_server
from seqserve.store.signature import Signature


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "models"
    write_lstm_model(root, "lstm", 1)
    write_embedding_model(root, "embed", 1)
    (root / "embed" / "config.yaml").write_text("max_batch_size: 8\nmax_queue_delay: 0.003\nmax_queue_size: 50\n")
    stateful = write_lstm_model(root, "stateful", 1)
    replace(Signature.read(stateful), stateful=True).write(stateful)
    (root / "stateful" / "config.yaml").write_text("max_sequence_idle: 60\nsequence_batch_delay: 0.005\n")
    write_embedding_model(root, "unbatched", 1)
    (root / "unbatched" / "config.yaml").write_text("batching: false\n")
    broken = write_embedding_model(root, "broken", 1)
    (broken / "signature.json").write_text("[1, 2]")  # a version that cannot load: known, never ready
    return root


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[RunningServer]:
    with running_server(store, "--grpc-port", "0") as running:
        yield running


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(server.http_url)
    yield c
    c.close()


def _infer_lstm(client: triton.InferenceServerClient, batch: int, **sequence: Any) -> None:
    x = np.zeros((batch, 2, FEATURES), dtype=np.float32)
    tensor = triton.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    client.infer(sequence.pop("model", "lstm"), [tensor], **sequence)


def _stats(client: triton.InferenceServerClient, model: str) -> dict[str, Any]:
    (stats,) = client.get_inference_statistics(model)["model_stats"]
    return stats


def test_config_of_a_batched_stateless_model_maps_its_settings(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("embed")
    assert config["name"] == "embed"
    assert (config["platform"], config["backend"]) == ("onnxruntime_onnx", "onnxruntime")
    assert config["max_batch_size"] == 8  # dims below leave the batch dimension out, as Triton's do
    assert config["input"] == [{"name": "tokens", "data_type": "TYPE_INT64", "dims": [-1]}]
    assert config["output"] == [{"name": "score", "data_type": "TYPE_FP32", "dims": [2]}]
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 3000}
    assert "sequence_batching" not in config
    assert config["instance_group"] == [{"kind": "KIND_CPU", "count": 1}]
    parameters = {k: v["string_value"] for k, v in config["parameters"].items()}
    assert parameters["max_queue_size"] == "50"
    assert parameters["stateful"] == "false"


def test_config_of_a_stateful_model_has_its_sequence_batcher(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("stateful", "1")
    assert config["max_batch_size"] == 64  # the server's default: most samples in one batched run
    assert config["input"] == [{"name": "x", "data_type": "TYPE_FP32", "dims": [-1, FEATURES]}]
    assert [o["dims"] for o in config["output"]] == [[UNITS], [-1, UNITS]]
    sequence = config["sequence_batching"]
    assert sequence["max_sequence_idle_microseconds"] == 60_000_000
    assert sequence["oldest"] == {"max_queue_delay_microseconds": 5000}
    # The recurrent states the server carries between steps: Triton's implicit state.
    assert {(s["input_name"], s["output_name"]) for s in sequence["state"]} == {
        ("state_in.lstm.h", "state_out.lstm.h"),
        ("state_in.lstm.c", "state_out.lstm.c"),
    }
    assert all(s["dims"] == [UNITS] and s["data_type"] == "TYPE_FP32" for s in sequence["state"])
    assert "dynamic_batching" not in config
    assert config["parameters"]["stateful"] == {"string_value": "true"}


def test_config_of_a_model_with_batching_off_has_no_batcher(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("unbatched")
    assert "dynamic_batching" not in config and "sequence_batching" not in config
    assert config["parameters"]["batching"] == {"string_value": "false"}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v2/models/nope/config", "unknown model 'nope'"),
        ("/v2/models/embed/versions/7/config", "model 'embed' has no version 7"),
        ("/v2/models/embed/versions/x/config", "model 'embed' has no version 'x'"),
    ],
)
def test_config_of_an_unknown_model_or_version_is_404(server: RunningServer, path: str, message: str) -> None:
    response = httpx.get(f"http://{server.http_url}{path}")
    assert response.status_code == 404
    assert message in response.json()["error"]


def test_statistics_move_by_exactly_what_was_sent(client: triton.InferenceServerClient) -> None:
    before = _stats(client, "lstm")
    for _ in range(3):
        _infer_lstm(client, batch=2)
    wrong = triton.InferInput("x", [2, 2, FEATURES + 1], "FP32")
    wrong.set_data_from_numpy(np.zeros((2, 2, FEATURES + 1), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="x"):
        client.infer("lstm", [wrong])  # a shape the model refuses: a failure, and no run
    after = _stats(client, "lstm")

    assert (after["name"], after["version"]) == ("lstm", "1")
    assert after["inference_count"] - before["inference_count"] == 6  # samples
    assert after["execution_count"] - before["execution_count"] == 3  # one at a time: each ran alone
    assert after["last_inference"] >= before["last_inference"] and after["last_inference"] > 0
    moved = {
        kind: after["inference_stats"][kind]["count"] - before["inference_stats"][kind]["count"]
        for kind in ("success", "fail", "queue", "compute_infer")
    }
    assert moved == {"success": 3, "fail": 1, "queue": 3, "compute_infer": 3}
    for kind in ("success", "fail", "compute_infer"):
        assert after["inference_stats"][kind]["ns"] > before["inference_stats"][kind]["ns"]
    # Timed within compute_infer, but counted like it: perf_analyzer refuses compute counts that differ.
    for kind in ("compute_input", "compute_output"):
        assert after["inference_stats"][kind] == {"count": after["inference_stats"]["compute_infer"]["count"], "ns": 0}
    by_size = {b["batch_size"]: b["compute_infer"] for b in after["batch_stats"]}
    before_size = {b["batch_size"]: b["compute_infer"] for b in before["batch_stats"]}
    assert by_size[2]["count"] - before_size.get(2, {"count": 0})["count"] == 3


def test_statistics_count_sequence_steps(client: triton.InferenceServerClient) -> None:
    before = _stats(client, "stateful")
    _infer_lstm(client, batch=1, model="stateful", sequence_id=9, sequence_start=True)
    _infer_lstm(client, batch=1, model="stateful", sequence_id=9, sequence_end=True)
    after = _stats(client, "stateful")
    assert after["inference_count"] - before["inference_count"] == 2
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 2


def test_statistics_of_every_model_and_of_one_version(server: RunningServer) -> None:
    everything = httpx.get(f"http://{server.http_url}/v2/models/stats").json()["model_stats"]
    assert sorted((s["name"], s["version"]) for s in everything) == [
        ("embed", "1"), ("lstm", "1"), ("stateful", "1"), ("unbatched", "1"),
    ]  # fmt: skip
    one = httpx.get(f"http://{server.http_url}/v2/models/embed/versions/1/stats").json()["model_stats"]
    assert [(s["name"], s["version"]) for s in one] == [("embed", "1")]
    assert set(one[0]["inference_stats"]) == {
        "success", "fail", "queue", "compute_input", "compute_infer", "compute_output",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("path", "message"),
    [("/v2/models/nope/stats", "unknown model 'nope'"), ("/v2/models/embed/versions/3/stats", "no version 3")],
)
def test_statistics_of_an_unknown_model_or_version_is_404(server: RunningServer, path: str, message: str) -> None:
    response = httpx.get(f"http://{server.http_url}{path}")
    assert response.status_code == 404
    assert message in response.json()["error"]


def test_server_metadata_lists_both_extensions(client: triton.InferenceServerClient) -> None:
    extensions = client.get_server_metadata()["extensions"]
    assert {"model_configuration", "statistics", "model_repository"} <= set(extensions)


def test_config_and_statistics_of_a_model_that_cannot_serve_are_503(server: RunningServer) -> None:
    for path in ("/v2/models/broken/config", "/v2/models/broken/stats", "/v2/models/broken/versions/1/stats"):
        response = httpx.get(f"http://{server.http_url}{path}")
        assert response.status_code == 503, path
        assert "model 'broken' version 1 is not ready" in response.json()["error"]


def test_batched_statistics_add_up_to_the_samples_sent(server: RunningServer) -> None:
    with triton.InferenceServerClient(server.http_url, concurrency=8) as c:
        before = _stats(c, "embed")
        tokens = np.ones((2, 3), dtype=np.int64)
        tensor = triton.InferInput("tokens", list(tokens.shape), "INT64")
        tensor.set_data_from_numpy(tokens)
        pending = [c.async_infer("embed", [tensor]) for _ in range(16)]
        for request in pending:
            request.get_result()
        after = _stats(c, "embed")

    def samples(stats: dict[str, Any]) -> int:
        return sum(b["batch_size"] * b["compute_infer"]["count"] for b in stats["batch_stats"])

    assert after["inference_count"] - before["inference_count"] == 32
    assert samples(after) - samples(before) == 32  # every sample in exactly one execution
    executions = after["execution_count"] - before["execution_count"]
    assert 4 <= executions <= 16  # batches of at most max_batch_size 8 samples (4 requests)
    assert after["inference_stats"]["queue"]["count"] - before["inference_stats"]["queue"]["count"] == 16
