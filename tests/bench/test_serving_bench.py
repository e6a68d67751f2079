"""Smoke tests of the serving benchmark's parts (bench/serving): they run, they count, they parse.

Speed is not asserted here (DESIGN: numbers are measured by the benchmark, not by unit tests); these
only make sure `bench/serving_load.py` still works against the current server: the load generator
streams real steps through seqserve and the echo server, and its readings are parsed right.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.onnx_models import write_lstm_model

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from serving import loadgen, profile_summary, servers  # noqa: E402


def _drive(target: str, features: int, **extra: str) -> dict[str, object]:
    command = [sys.executable, "-m", "serving.loadgen", "--target", target, "--sessions", "4", "--duration", "0.5",
               "--warmup", "0.2", "--model", "lstm", "--features", str(features)]  # fmt: skip
    for key, value in extra.items():
        command += [f"--{key.replace('_', '-')}", value]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.slow
def test_load_generator_streams_steps_through_seqserve_with_batching(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_lstm_model(store, "lstm", stateful=True)  # x [N, T, 3]
    with servers.seqserve(store, tmp_path, "on", {"batching": "true"}) as server:
        assert server.grpc_target is not None and server.metrics_url is not None
        result = _drive(server.grpc_target, 3, server_pid=str(server.pid), metrics_url=server.metrics_url)
    assert result["errors"] == 0, result["first_error"]
    assert result["steps"] > 0 and result["per_session_steps_min"] > 0
    assert result["server_cpu_s"] is not None and result["server_cpu_s"] > 0
    batches = servers.batch_summary([servers.batch_difference(result["metrics_before"], result["metrics_after"])])
    assert batches is not None and batches["runs"] > 0 and 1 <= batches["mean"] <= 4


@pytest.mark.slow
def test_load_generator_streams_steps_through_seqserve_over_v2_rest(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_lstm_model(store, "lstm", stateful=True)
    with servers.seqserve(store, tmp_path, "on-rest", {"batching": "true"}, rest=True) as server:
        assert server.rest_url is not None and server.rest_protocol == "v2rest"
        result = _drive(server.rest_url, 3, protocol="v2rest", server_pid=str(server.pid))
    assert result["errors"] == 0, result["first_error"]
    assert result["steps"] > 0 and result["per_session_steps_min"] > 0


@pytest.mark.slow
def test_load_generator_against_the_echo_server(tmp_path: Path) -> None:
    with servers.echo(tmp_path, output="last", width=4) as server:
        assert server.grpc_target is not None
        result = _drive(server.grpc_target, 3)
    assert result["errors"] == 0 and result["steps"] > 0


@pytest.mark.slow
def test_in_process_bench_interleaves_bare_ort_the_batcher_and_the_data_plane(tmp_path: Path) -> None:
    store = tmp_path / "store"
    write_lstm_model(store, "lstm", stateful=True)  # x [N, T, 3]
    command = [sys.executable, "-m", "serving.inprocess", "--store", str(store), "--sessions", "4", "--seconds",
               "0.6", "--rounds", "2", "--warmup", "0.1", "--features", "3"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(BENCH), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for mode in ("bare", "batcher", "data_plane"):
        assert result[mode]["steps_per_s"] > 0 and len(result[mode]["steps_per_s_per_window"]) == 2, mode
    for mode in ("batcher", "data_plane"):
        assert result[mode]["latency_ms"]["p50"] > 0
        assert result[f"{mode}_vs_bare"] == result[mode]["steps_per_s"] / result["bare"]["steps_per_s"]


def test_batch_histogram_difference_counts_the_batches_in_between() -> None:
    def exposition(counts: dict[str, int], total: float, n: int) -> str:
        lines = [f'seqserve_batch_size_bucket{{le="{le}",model="m",version="1"}} {c}' for le, c in counts.items()]
        return "\n".join([*lines, f'seqserve_batch_size_sum{{model="m",version="1"}} {total}',
                          f'seqserve_batch_size_count{{model="m",version="1"}} {n}'])  # fmt: skip

    before = exposition({"1.0": 2, "8.0": 2, "64.0": 2, "+Inf": 2}, 2.0, 2)
    after = exposition({"1.0": 3, "8.0": 5, "64.0": 7, "+Inf": 7}, 2.0 + 1 + 2 * 8 + 2 * 64, 7)
    summary = servers.batch_summary([servers.batch_difference(before, after)])
    assert summary == {"runs": 5, "mean": (1 + 16 + 128) / 5, "buckets": {"<=1": 1, "<=8": 2, "<=64": 2}}


def test_profile_samples_are_charged_to_the_innermost_known_part() -> None:
    loop = "Handle._run (asyncio/events.py:80)"
    assert profile_summary.categorize([loop, "Batcher._run_group (seqserve/batching/batcher.py:1)",
                                       "concatenate (numpy/_core/multiarray.py:1)"]).startswith("batcher")  # fmt: skip
    assert profile_summary.categorize([loop]).startswith("event loop")
    assert profile_summary.categorize([loop, "EpollSelector.select (selectors.py:468)"]) == profile_summary.IDLE


# -- configuration `torchserve`: the parts that run without TorchServe's environment ----------------


def _predictions_request_class() -> type:
    """TorchServe's PredictionsRequest (its inference.proto), built at run time: no TorchServe stubs."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="ts_inference_test.proto", package="tstest", syntax="proto3")
    request = proto.message_type.add(name="PredictionsRequest")
    request.field.add(name="model_name", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    request.field.add(name="model_version", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    entry = request.nested_type.add(name="InputEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=field.TYPE_BYTES, label=field.LABEL_OPTIONAL)
    request.field.add(name="input", number=3, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
                      type_name=".tstest.PredictionsRequest.InputEntry")  # fmt: skip
    request.field.add(name="sequence_id", number=4, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tstest.PredictionsRequest"))


def test_torchserve_requests_encode_predictions_requests() -> None:
    start, step, end = loadgen.torchserve_requests("lstm", 256, sequence_id=7)
    parse = _predictions_request_class().FromString
    first, middle, last = parse(start), parse(step), parse(end)
    assert first.model_name == "lstm" and first.sequence_id == "seq-7" and middle.sequence_id == "seq-7"
    assert set(first.input) == {"data", "sequence_start"} and set(middle.input) == {"data"}
    assert set(last.input) == {"data", "sequence_end"}
    x = np.frombuffer(middle.input["data"], np.float32)
    assert np.array_equal(x, np.random.default_rng(7).standard_normal((1, 1, 256), np.float32).ravel())
    long_name = loadgen.torchserve_request("m" * 300, "s", {"k": b"v" * 70_000})  # multi-byte varints
    assert parse(long_name).model_name == "m" * 300 and len(parse(long_name).input["k"]) == 70_000


class _Context:
    """What TorchServe 0.12 hands a handler, as far as lstm_handler.py reads it."""

    def __init__(self, model_dir: Path, config: dict[str, object]) -> None:
        self.system_properties = {"model_dir": str(model_dir)}
        self.manifest = {"model": {"serializedFile": "lstm.pt"}}
        self.model_yaml_config = config
        self.sequence_ids: list[str] = []
        self.statuses: dict[int, int] = {}

    def get_sequence_id(self, idx: int) -> str:
        return self.sequence_ids[idx]

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        self.statuses[idx] = code


def test_torchserve_handler_keeps_lstm_states_per_sequence(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(BENCH / "baselines" / "torchserve"))
    from lstm_handler import StatefulLSTMHandler
    from lstm_model import StackedLSTM

    torch.manual_seed(0)
    model = StackedLSTM(features=3, units=4, layers=2).eval()
    torch.save(model.state_dict(), tmp_path / "lstm.pt")
    context = _Context(tmp_path, {"handler": {"intra_op_threads": 1, "max_sequences": 2, "state_idle_seconds": 60}})
    handler = StatefulLSTMHandler()
    handler.initialize(context)
    xs = np.random.default_rng(0).standard_normal((3, 2, 3), dtype=np.float32)  # steps x sequences x features

    def step(rows: list[tuple[str, np.ndarray, dict[str, bytes]]]) -> list[np.ndarray]:
        context.sequence_ids = [sequence for sequence, _, _ in rows]
        answers = handler.handle([{"data": x.tobytes(), **flags} for _, x, flags in rows], context)
        return [np.frombuffer(answer, np.float32) for answer in answers]

    with torch.inference_mode():  # what the two sequences should answer: the model run on each alone
        zeros = torch.zeros(2, 2, 4)
        expected, _, _ = model(torch.from_numpy(xs.transpose(1, 0, 2).copy()), zeros, zeros)
    got = [step([("a", xs[t, 0], {}), ("b", xs[t, 1], {})]) for t in range(2)]  # both in one batch
    got.append([step([("a", xs[2, 0], {})])[0], step([("b", xs[2, 1], {})])[0]])  # then one by one
    for t in range(3):
        for s in range(2):
            np.testing.assert_allclose(got[t][s], expected[s, t].numpy(), rtol=1e-5, atol=1e-6)

    restarted = step([("a", xs[0, 0], {"sequence_start": b"1"})])[0]  # from zeros again
    np.testing.assert_allclose(restarted, expected[0, 0].numpy(), rtol=1e-5, atol=1e-6)
    step([("b", xs[0, 1], {"sequence_end": b"1"})])
    assert set(handler.states) == {"a"}
    step([("c", xs[0, 0], {}), ("d", xs[0, 1], {})])  # max_sequences 2: the least recently used goes
    assert set(handler.states) == {"c", "d"}

    context.sequence_ids = ["e", "f"]
    answers = handler.handle([{"data": b"\0" * 5}, {"data": xs[0, 0].tobytes()}], context)
    assert context.statuses == {0: 400} and b"expected x as 12 bytes" in answers[0] and len(answers[1]) == 16


def test_torchserve_runs_by_default_only_where_its_environment_exists() -> None:
    import serving_load

    without, with_env = serving_load.default_configs(False), serving_load.default_configs(True)
    assert not any(c.startswith("torchserve") for c in without) and "on" in without
    assert with_env == [*without, "torchserve", "torchserve-nomkldnn"]
    assert serving_load.build_parser().parse_args(["--configs", "torchserve"]).configs == ["torchserve"]

    def row(config: str, steps_per_s: float) -> dict[str, object]:
        return {"config": config, "sessions": 64, "steps_per_s": steps_per_s, "latency_ms": {"p99": 10.0}}

    checks = serving_load.targets([row("on", 3000.0), row("torchserve", 1000.0)], [], [])
    peer = [t for t in checks if "TorchServe" in t.name]
    assert len(peer) == 1 and peer[0].passed and peer[0].measured == "3,000 / 1,000 = 3.00x"


def test_tree_cpu_counts_the_children_of_a_process(tmp_path: Path) -> None:
    from serving.stats import cpu_seconds, process_tree, tree_cpu_seconds

    busy = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\ntime.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", busy])
    try:
        assert child.pid in process_tree(os.getpid())
        deadline = time.monotonic() + 20
        while cpu_seconds(child.pid) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tree_cpu_seconds(os.getpid()) >= cpu_seconds() + cpu_seconds(child.pid) - 0.05
    finally:
        child.kill()
        child.wait()


@pytest.mark.slow
def test_session_memory_bench_measures_state_and_bookkeeping(tmp_path: Path) -> None:
    import session_memory

    assert session_memory.main(["--sessions", "50", "100", "--units", "4", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "session-memory.json").read_text())
    rows = results["rows"]
    assert [r["sessions"] for r in rows] == [50, 100]
    assert all(r["state_bytes_per_session"] == 4 * 4 * 4 for r in rows)  # h and c of two LSTM(4), FP32
    assert all(0 < r["bookkeeping_bytes_per_session"] < 10_000 for r in rows)
    assert (tmp_path / "session-memory.png").stat().st_size > 0


def test_ort_idle_gap_bench_times_runs_after_sleeping_and_spinning_pauses(tmp_path: Path) -> None:
    import ort_idle_gap

    argv = ["--gaps-ms", "0.1", "1", "--runs", "8", "--rounds", "2", "--features", "3", "--units", "4"]
    assert ort_idle_gap.main([*argv, "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "ort-idle-gap.json").read_text())["rows"]
    assert [(r["kind"], r["gap_ms"]) for r in rows] == [
        ("back to back", 0.0), ("sleep", 0.1), ("spin", 0.1), ("sleep", 1.0), ("spin", 1.0)
    ]  # fmt: skip
    assert all(r["runs"] == 8 and 0 < r["p10_ms"] <= r["p50_ms"] <= r["p90_ms"] for r in rows)
    assert (tmp_path / "ort-idle-gap.png").stat().st_size > 0
