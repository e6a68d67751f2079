"""Triton's model repository extension (index, load, unload) driven by tritonclient.http against a real server.

Poll mode (the default): the store directory is the truth; load rescans a model now (writing any
config or files it carries first), unload is refused. Explicit mode (`SEQSERVE_MODEL_CONTROL=explicit`):
only `SEQSERVE_LOAD_MODELS` load at start, and nothing loads or unloads but by these calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from helpers.onnx_models import FEATURES, write_embedding_model, write_lstm_model
from helpers.server import RunningServer, running_server
from seqserve.store.signature import MODEL_FILE, SIGNATURE_FILE

EXPLICIT = {"SEQSERVE_MODEL_CONTROL": "explicit", "SEQSERVE_LOAD_MODELS": "lstm"}


def _refused(call: object, status: str, *words: str) -> str:
    with pytest.raises(InferenceServerException) as caught:
        call()  # type: ignore[operator]
    message = caught.value.message()
    assert caught.value.status() == status, message
    for word in words:
        assert word in message, message
    return message


def _index(client: triton.InferenceServerClient) -> dict[tuple[str, str], tuple[str, str]]:
    return {(m["name"], m["version"]): (m["state"], m["reason"]) for m in client.get_model_repository_index()}


def _ready_index(server: RunningServer) -> set[tuple[str, str]]:
    """`ready: true` in the body, which tritonclient.http does not send."""
    answer = httpx.post(f"http://{server.http_url}/v2/repository/index", json={"ready": True})
    assert answer.status_code == 200, answer.text
    return {(m["name"], m["version"]) for m in answer.json()}


def _x(batch: int = 1) -> triton.InferInput:
    tensor = triton.InferInput("x", [batch, 2, FEATURES], "FP32")
    tensor.set_data_from_numpy(np.ones((batch, 2, FEATURES), dtype=np.float32))
    return tensor


def _tokens() -> triton.InferInput:
    tensor = triton.InferInput("tokens", [1, 3], "INT64")
    tensor.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.int64))
    return tensor


@pytest.fixture
def store(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    write_lstm_model(store, "lstm", 1, stateful=True)
    write_embedding_model(store, "embed", 1)
    return store


@pytest.fixture
def explicit(store: Path) -> Iterator[RunningServer]:
    with running_server(store, env=EXPLICIT) as server:
        yield server


def test_poll_mode_index_load_and_refused_unload(store: Path) -> None:
    with running_server(store) as server:
        client = triton.InferenceServerClient(server.http_url)
        assert _index(client) == {("embed", "1"): ("READY", ""), ("lstm", "1"): ("READY", "")}
        assert _ready_index(server) == {("embed", "1"), ("lstm", "1")}

        # Load rescans the model now (no wait for the next poll); with a config it writes config.yaml.
        config = {"max_batch_size": 8, "dynamic_batching": {"max_queue_delay_microseconds": 500}}
        client.load_model("embed", config=json.dumps(config))
        written = (store / "embed" / "config.yaml").read_text()
        assert "max_batch_size: 8" in written and "max_queue_delay: 0.0005" in written
        assert client.infer("embed", [_tokens()]).as_numpy("score").shape == (1, 2)

        _refused(lambda: client.unload_model("embed"), "400", "SEQSERVE_MODEL_CONTROL=explicit")
        _refused(lambda: client.load_model("nothing"), "404", "nothing")
        assert client.is_model_ready("embed")


def test_explicit_mode_loads_only_what_it_is_told(explicit: RunningServer, store: Path) -> None:
    client = triton.InferenceServerClient(explicit.http_url)
    assert _index(client) == {("embed", ""): ("UNAVAILABLE", "not loaded"), ("lstm", "1"): ("READY", "")}
    assert _ready_index(explicit) == {("lstm", "1")}
    _refused(lambda: client.infer("embed", [_tokens()]), "404", "not loaded")

    # A new version on disk is not picked up until a load says so.
    write_embedding_model(store, "embed", 2)
    time.sleep(0.5)
    assert ("embed", "") in _index(client)
    client.load_model("embed")
    assert _index(client)[("embed", "2")] == ("READY", "")
    assert client.infer("embed", [_tokens()]).get_response()["model_version"] == "2"

    client.unload_model("embed", unload_dependents=True)
    assert _index(client)[("embed", "")] == ("UNAVAILABLE", "not loaded")
    _refused(lambda: client.infer("embed", [_tokens()]), "404", "not loaded")
    client.unload_model("embed")  # unloading what is not loaded is no error, as in Triton
    _refused(lambda: client.unload_model("nothing"), "404", "nothing")


def test_load_with_files_writes_a_new_version(explicit: RunningServer, store: Path, tmp_path: Path) -> None:
    client = triton.InferenceServerClient(explicit.http_url)
    source = write_lstm_model(tmp_path / "elsewhere", "lstm", 7, seed=3, stateful=True)
    files = {f"file:2/{name}": (source / name).read_bytes() for name in (MODEL_FILE, SIGNATURE_FILE)}
    client.load_model("lstm", config=json.dumps({"name": "lstm", "max_batch_size": 4}), files=files)
    assert _index(client) == {
        ("embed", ""): ("UNAVAILABLE", "not loaded"),
        ("lstm", "1"): ("READY", ""),
        ("lstm", "2"): ("READY", ""),
    }
    assert (store / "lstm" / "2" / MODEL_FILE).read_bytes() == files[f"file:2/{MODEL_FILE}"]
    assert "max_batch_size: 4" in (store / "lstm" / "config.yaml").read_text()
    assert client.infer("lstm", [_x()]).get_response()["model_version"] == "2"

    # A model that does not exist yet may be created by its files.
    client.load_model("fresh", files=files)
    assert _index(client)[("fresh", "2")] == ("READY", "")


def test_failed_loads_change_nothing(explicit: RunningServer, store: Path) -> None:
    client = triton.InferenceServerClient(explicit.http_url)
    before = _index(client)
    listing = sorted(p.relative_to(store) for p in store.rglob("*") if not p.name.endswith(".log"))
    model = (store / "lstm" / "1" / MODEL_FILE).read_bytes()
    signature = (store / "lstm" / "1" / SIGNATURE_FILE).read_bytes()

    _refused(lambda: client.load_model("lstm", config=json.dumps({"optimization": {}})), "400", "optimization")
    _refused(lambda: client.load_model("lstm", config="{not json"), "400", "JSON")
    _refused(lambda: client.load_model("lstm", config=json.dumps({"name": "other"})), "400", "other")
    _refused(lambda: client.load_model("lstm", config=json.dumps({"max_batch_size": -1})), "400", "max_batch_size")
    _refused(
        lambda: client.load_model("lstm", files={"file:2/model.onnx": b"not onnx", "file:2/signature.json": signature}),
        "400",
        "version 2",
    )
    _refused(lambda: client.load_model("lstm", files={"file:2/model.onnx": model}), "400", SIGNATURE_FILE)
    _refused(lambda: client.load_model("lstm", files={"file:../x/model.onnx": model}), "400", "file:../x/model.onnx")
    _refused(
        lambda: client.load_model("lstm", files={"file:1/model.onnx": model, "file:1/signature.json": signature}),
        "400",
        "already has version 1",
    )
    both = {"file:1/model.onnx": model, "file:1/signature.json": signature}
    _refused(lambda: client.load_model(".hidden", files=both), "400", "cannot name a new model")

    # A config.yaml broken on disk fails the load; the version serving keeps its last good settings.
    (store / "lstm" / "config.yaml").write_text("max_batch_size: lots\n")
    _refused(lambda: client.load_model("lstm"), "400", "config.yaml", "max_batch_size")
    (store / "lstm" / "config.yaml").unlink()

    assert _index(client) == before
    assert sorted(p.relative_to(store) for p in store.rglob("*") if not p.name.endswith(".log")) == listing
    assert client.infer("lstm", [_x()]).get_response()["model_version"] == "1"


@pytest.mark.parametrize(
    ("path", "body", "words"),
    [
        ("/v2/repository/models/lstm/load", b"[" * 100_000, "nested too deeply"),
        ("/v2/repository/index", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "nested too deeply"),
        ("/v2/repository/models/lstm/unload", b"{not json", "not valid JSON"),
        ("/v2/repository/models/lstm/load", b"[1]", "must be a JSON object"),
    ],
    ids=["deep load", "deep index", "malformed", "not an object"],
)
def test_bad_json_bodies_are_400_naming_the_problem(
    explicit: RunningServer, path: str, body: bytes, words: str
) -> None:
    answer = httpx.post(f"http://{explicit.http_url}{path}", content=body, timeout=30)
    assert answer.status_code == 400 and words in answer.json()["error"], answer.text[:300]


def test_sessions_finish_on_an_unloaded_model(explicit: RunningServer) -> None:
    client = triton.InferenceServerClient(explicit.http_url)
    first = client.infer("lstm", [_x()], sequence_id=5, sequence_start=True).as_numpy("last")
    client.unload_model("lstm")
    # The session goes on, on the version it started on; the version reports it is unloading.
    assert _index(client)[("lstm", "1")][0] == "UNLOADING"
    second = client.infer("lstm", [_x()], sequence_id=5).as_numpy("last")
    assert not np.allclose(first, second)  # the state was carried
    # Nothing new starts on it.
    _refused(lambda: client.infer("lstm", [_x()], sequence_id=6, sequence_start=True), "404", "not loaded")
    client.infer("lstm", [_x()], sequence_id=5, sequence_end=True)
    deadline = time.monotonic() + 10
    while _index(client).get(("lstm", "")) != ("UNAVAILABLE", "not loaded") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _index(client) == {("embed", ""): ("UNAVAILABLE", "not loaded"), ("lstm", ""): ("UNAVAILABLE", "not loaded")}
    _refused(lambda: client.infer("lstm", [_x()], sequence_id=5), "404")


def test_explicit_mode_refuses_a_start_list_naming_a_missing_model(store: Path) -> None:
    starting = running_server(store, env={**EXPLICIT, "SEQSERVE_LOAD_MODELS": "lstm,nothing"}, timeout=20)
    with pytest.raises(RuntimeError, match="SEQSERVE_LOAD_MODELS names nothing"), starting:
        pass


def test_model_control_setting_is_checked(store: Path) -> None:
    starting = running_server(store, env={"SEQSERVE_MODEL_CONTROL": "sometimes"}, timeout=20)
    with pytest.raises(RuntimeError, match="SEQSERVE_MODEL_CONTROL.*'poll' or 'explicit'"), starting:
        pass


def test_the_same_over_grpc_with_tritonclient(explicit: RunningServer, store: Path, tmp_path: Path) -> None:
    """Index, load (a config and files), unload and their errors through tritonclient.grpc."""
    import tritonclient.grpc as triton_grpc

    with triton_grpc.InferenceServerClient(explicit.grpc_url) as client:

        def index() -> dict[tuple[str, str], str]:
            return {(m.name, m.version): m.state for m in client.get_model_repository_index().models}

        assert index() == {("embed", ""): "UNAVAILABLE", ("lstm", "1"): "READY"}
        client.load_model("embed")
        assert index()[("embed", "1")] == "READY" and client.is_model_ready("embed")
        source = write_lstm_model(tmp_path / "elsewhere", "lstm", 7, seed=3, stateful=True)
        files = {f"file:2/{name}": (source / name).read_bytes() for name in (MODEL_FILE, SIGNATURE_FILE)}
        client.load_model("lstm", config=json.dumps({"max_batch_size": 4}), files=files)
        assert index()[("lstm", "2")] == "READY"
        assert (store / "lstm" / "2" / MODEL_FILE).read_bytes() == files[f"file:2/{MODEL_FILE}"]
        client.unload_model("embed")
        assert index()[("embed", "")] == "UNAVAILABLE"
        for call, code in [
            (lambda: client.unload_model("nothing"), "StatusCode.NOT_FOUND"),
            (lambda: client.is_model_ready("embed"), "StatusCode.NOT_FOUND"),  # not loaded (README)
            (lambda: client.load_model("lstm", config=json.dumps({"no_such_field": 1})), "StatusCode.INVALID_ARGUMENT"),
        ]:
            with pytest.raises(InferenceServerException) as refused:
                call()
            assert refused.value.status() == code, refused.value.message()
