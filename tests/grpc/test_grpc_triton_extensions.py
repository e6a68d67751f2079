"""Triton's model configuration, statistics and repository RPCs, driven by tritonclient.grpc.

tritonclient decodes the answers with Triton's own descriptors: a field number of ours that
differed from Triton's would show up here as a missing or garbled field.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from helpers.onnx_models import FEATURES, UNITS, write_embedding_model, write_lstm_model
from helpers.server import RunningServer
from seqserve.store.signature import Signature


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store") / "models"
    write_lstm_model(root, "lstm", 1)
    write_embedding_model(root, "embed", 1)
    (root / "embed" / "config.yaml").write_text("max_batch_size: 8\nmax_queue_delay: 0.003\n")
    stateful = write_lstm_model(root, "stateful", 1)
    replace(Signature.read(stateful), stateful=True).write(stateful)
    (root / "stateful" / "config.yaml").write_text("max_sequence_idle: 60\nsequence_batch_delay: 0.005\n")
    return root


@pytest.fixture(scope="module")
def client(server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.grpc_url) as c:
        yield c


def _x(batch: int) -> triton.InferInput:
    tensor = triton.InferInput("x", [batch, 1, FEATURES], "FP32")
    tensor.set_data_from_numpy(np.ones((batch, 1, FEATURES), dtype=np.float32))
    return tensor


def _stats(client: triton.InferenceServerClient, model: str) -> service_pb2.ModelStatistics:
    (stats,) = client.get_inference_statistics(model).model_stats
    return stats


def test_config_of_a_stateful_model_decodes_as_triton_s(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("stateful").config
    assert (config.name, config.platform, config.backend) == ("stateful", "onnxruntime_onnx", "onnxruntime")
    assert config.max_batch_size == 64
    (x,) = config.input
    assert (x.name, x.data_type, list(x.dims)) == ("x", mc.TYPE_FP32, [-1, FEATURES])
    assert [(o.name, list(o.dims)) for o in config.output] == [("last", [UNITS]), ("sequence", [-1, UNITS])]
    assert config.WhichOneof("scheduling_choice") == "sequence_batching"
    sequence = config.sequence_batching
    assert sequence.max_sequence_idle_microseconds == 60_000_000
    assert sequence.WhichOneof("strategy_choice") == "oldest"
    assert sequence.oldest.max_queue_delay_microseconds == 5000
    assert sequence.oldest.max_candidate_sequences == 0  # none: seqserve has no such bound
    assert sorted(s.input_name for s in sequence.state) == ["state_in.lstm.c", "state_in.lstm.h"]
    (group,) = config.instance_group
    assert (group.kind, group.count) == (mc.ModelInstanceGroup.KIND_CPU, 1)
    assert config.parameters["stateful"].string_value == "true"


def test_config_is_the_same_over_both_protocols(client: triton.InferenceServerClient, server: RunningServer) -> None:
    over_grpc = client.get_model_config("embed", as_json=True)["config"]
    over_rest = httpx.get(f"http://{server.http_url}/v2/models/embed/config").json()
    # protobuf's JSON writes 64-bit integers as strings; the values are the same
    assert over_grpc["input"][0]["dims"] == ["-1"] and over_rest["input"][0]["dims"] == [-1]
    assert over_grpc["dynamic_batching"] == {"max_queue_delay_microseconds": "3000"}
    assert over_rest["dynamic_batching"] == {"max_queue_delay_microseconds": 3000}
    assert over_grpc["max_batch_size"] == over_rest["max_batch_size"] == 8
    assert over_grpc["parameters"] == over_rest["parameters"]


@pytest.mark.parametrize(("model", "version"), [("nope", ""), ("embed", "9"), ("embed", "x")])
def test_config_of_an_unknown_model_or_version_is_not_found(
    client: triton.InferenceServerClient, model: str, version: str
) -> None:
    with pytest.raises(InferenceServerException) as raised:
        client.get_model_config(model, version)
    assert raised.value.status() == "StatusCode.NOT_FOUND"
    assert model in raised.value.message()


def test_statistics_move_by_exactly_what_was_sent(client: triton.InferenceServerClient) -> None:
    before = _stats(client, "lstm")
    client.infer("lstm", [_x(3)])
    client.infer("lstm", [_x(3)])
    with pytest.raises(InferenceServerException):
        client.infer("lstm", [_x(3)], outputs=[triton.InferRequestedOutput("nope")])
    after = _stats(client, "lstm")
    assert (after.name, after.version) == ("lstm", "1")
    assert after.inference_count - before.inference_count == 6
    assert after.execution_count - before.execution_count == 2
    for kind, moved in (("success", 2), ("fail", 1), ("queue", 2), ("compute_infer", 2)):
        assert getattr(after.inference_stats, kind).count - getattr(before.inference_stats, kind).count == moved
    threes = [b.compute_infer.count for b in after.batch_stats if b.batch_size == 3]
    earlier = [b.compute_infer.count for b in before.batch_stats if b.batch_size == 3] or [0]
    assert threes[0] - earlier[0] == 2
    assert after.last_inference > 0


def test_streamed_sequence_steps_are_counted(client: triton.InferenceServerClient) -> None:
    before = _stats(client, "stateful")
    answers: queue.Queue[object] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put(error or result))
    try:
        for step in range(4):
            client.async_stream_infer(
                "stateful", [_x(1)], sequence_id=5, sequence_start=step == 0, sequence_end=step == 3
            )
        results = [answers.get(timeout=10) for _ in range(4)]
    finally:
        client.stop_stream()
    assert all(not isinstance(r, InferenceServerException) for r in results)
    after = _stats(client, "stateful")
    assert after.inference_count - before.inference_count == 4
    assert after.inference_stats.success.count - before.inference_stats.success.count == 4


def test_statistics_of_every_model_and_unknown_ones(client: triton.InferenceServerClient) -> None:
    names = sorted((s.name, s.version) for s in client.get_inference_statistics().model_stats)
    assert names == [("embed", "1"), ("lstm", "1"), ("stateful", "1")]
    for model, version in (("nope", ""), ("lstm", "4")):
        with pytest.raises(InferenceServerException) as raised:
            client.get_inference_statistics(model, version)
        assert raised.value.status() == "StatusCode.NOT_FOUND"


def test_repository_index_lists_the_store(client: triton.InferenceServerClient) -> None:
    rows = {(m.name, m.version, m.state) for m in client.get_model_repository_index().models}
    assert {("embed", "1", "READY"), ("lstm", "1", "READY"), ("stateful", "1", "READY")} <= rows


def test_repository_load_with_a_file_as_text_is_invalid(server: RunningServer) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.RepositoryModelLoadRequest(model_name="lstm")
        request.parameters["file:2/model.onnx"].string_param = "not bytes"
        with pytest.raises(grpc.RpcError) as raised:
            stub.RepositoryModelLoad(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "file:2/model.onnx" in (raised.value.details() or "")


def test_server_metadata_lists_both_extensions(client: triton.InferenceServerClient) -> None:
    extensions = set(client.get_server_metadata().extensions)
    assert {"model_configuration", "statistics"} <= extensions
