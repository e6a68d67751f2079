"""WebSocket streaming at `/v2/models/{m}/stream` on a real `seqserve serve`: a Keras stateful model
streamed in chunks equals Keras `predict`; sequences multiplexed on one socket, binary frames, REST
then WebSocket on one sequence, all exact; errors answered in-band with the error table's status
while the socket stays usable; the upgrade refused for an unknown model; messages over the limit refused.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import keras
import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from helpers.onnx_models import write_lstm_model
from helpers.server import RunningServer, running_server
from helpers.websocket_client import PREFIX, binary_step, decode_answer, exchange, open_stream, step
from seqserve.export import export_model

BATCH, STEPS, FEATURES = 2, 6, 3
MAX_REQUEST_BYTES = 64 * 1024


class Reference:
    """A stateful Keras LSTM and its own answers: reset_states, then predict chunk after chunk."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model

    def predict_chunks(self, x: np.ndarray, chunk: int) -> np.ndarray:
        for layer in self.model.layers:
            if hasattr(layer, "reset_states"):
                layer.reset_states()
        parts = [
            self.model.predict(x[:, t : t + chunk], batch_size=BATCH, verbose=0) for t in range(0, x.shape[1], chunk)
        ]
        return np.concatenate(parts, axis=1)


@pytest.fixture(scope="module")
def keras_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Reference]:
    root = tmp_path_factory.mktemp("keras-ws")
    keras.utils.set_random_seed(1)
    inputs = keras.Input(batch_shape=(BATCH, None, FEATURES), name="x")
    outputs = keras.layers.LSTM(4, stateful=True, return_sequences=True)(inputs)
    model = keras.Model(inputs, outputs)
    model.save(root / "lstm.keras")
    export_model(root / "lstm.keras", name="lstm", store=root / "store", progress=False)
    (root / "store" / "lstm" / "config.yaml").write_text("session_history: 3\n")  # for rewind
    write_lstm_model(root / "store", "doomed", 1)  # removed from the store by a test
    return root / "store", Reference(model)


@pytest.fixture(scope="module")
def server(keras_store: tuple[Path, Reference]) -> Iterator[RunningServer]:
    # Few requests in flight per socket: the pipelining tests send far more than it.
    env = {"SEQSERVE_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES), "SEQSERVE_WEBSOCKET_MAX_IN_FLIGHT": "4"}
    with running_server(keras_store[0], "--grpc-port", "0", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def reference(keras_store: tuple[Path, Reference]) -> Reference:
    return keras_store[1]


@pytest.fixture(scope="module")
def output_name(keras_store: tuple[Path, Reference]) -> str:
    from seqserve.store.signature import Signature

    return Signature.read(keras_store[0] / "lstm" / "1").outputs[0].name


def _url(server: RunningServer, model: str = "lstm", version: str | None = None) -> str:
    versions = f"/versions/{version}" if version else ""
    return f"ws://{server.http_url}/v2/models/{model}{versions}/stream"


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, STEPS, FEATURES)).astype(np.float32)


@pytest.mark.parametrize("version", [None, "1"])
async def test_chunks_streamed_over_a_websocket_match_keras_stateful_predict(
    server: RunningServer, reference: Reference, output_name: str, version: str | None
) -> None:
    x, chunk = _x(0), 2
    expected = reference.predict_chunks(x, chunk)
    async with open_stream(_url(server, version=version)) as ws:
        for _ in range(2):  # a second sequence_start on the same id resets the state, as reset_states does
            parts = []
            for t in range(0, STEPS, chunk):
                document, outputs = await exchange(ws, step(x[:, t : t + chunk], 11, f"r{t}", sequence_start=t == 0))
                assert document["id"] == f"r{t}" and document["model_name"] == "lstm"
                assert document["parameters"]["sequence_step"] == t // chunk + 1
                parts.append(outputs[output_name])
            np.testing.assert_allclose(np.concatenate(parts, axis=1), expected, atol=1e-5, rtol=0)


async def test_two_sequences_multiplexed_on_one_socket_are_each_exact_and_answered_in_order(
    server: RunningServer, reference: Reference, output_name: str
) -> None:
    xa, xb = _x(1), _x(2)
    async with open_stream(_url(server)) as ws:
        sent = []
        for t in range(STEPS):  # all sent before any answer is read: the socket carries them pipelined
            for name, x in (("a", xa), ("b", xb)):
                request_id = f"{name}{t}"
                await ws.send(json.dumps(step(x[:, t : t + 1], f"seq-{name}", request_id, sequence_start=t == 0)))
                sent.append(request_id)
        answers = [decode_answer(await ws.recv()) for _ in sent]
    assert [document["id"] for document, _ in answers] == sent
    for name, x in (("a", xa), ("b", xb)):
        got = [outputs[output_name] for document, outputs in answers if document["id"].startswith(name)]
        np.testing.assert_allclose(np.concatenate(got, axis=1), reference.predict_chunks(x, 1), atol=1e-5, rtol=0)


async def test_binary_frames_equal_json_answers(server: RunningServer, output_name: str) -> None:
    x = _x(3)
    async with open_stream(_url(server)) as ws:
        for t in range(0, STEPS, 3):
            start = t == 0
            as_json, json_outputs = await exchange(ws, step(x[:, t : t + 3], 21, "j", sequence_start=start))
            await ws.send(binary_step(x[:, t : t + 3], 22, "b", sequence_start=start))
            answer = await ws.recv()
            assert isinstance(answer, bytes)  # binary outputs asked for: a binary answer
            as_binary, binary_outputs = decode_answer(answer)
            assert as_binary["id"] == "b" and as_binary["parameters"] == as_json["parameters"]
            np.testing.assert_array_equal(binary_outputs[output_name], json_outputs[output_name])
        # A binary request whose outputs are JSON gets a text answer.
        message = bytearray(binary_step(x[:, :1], 23, "t", sequence_start=True))
        head_length = PREFIX.unpack_from(message)[0]
        head = json.loads(message[PREFIX.size : PREFIX.size + head_length])
        head["parameters"]["binary_data_output"] = False
        new_head = json.dumps(head).encode()
        await ws.send(PREFIX.pack(len(new_head)) + new_head + bytes(message[PREFIX.size + head_length :]))
        answer = await ws.recv()
        assert isinstance(answer, str) and json.loads(answer)["id"] == "t"


async def test_bad_messages_are_answered_with_the_error_table_and_the_socket_stays_usable(
    server: RunningServer, reference: Reference, output_name: str
) -> None:
    x = _x(4)
    bad_messages: list[tuple[str | bytes, int, str | None]] = [
        ("{not json", 400, None),
        ('{"id": "no-inputs"}', 400, "no-inputs"),
        (json.dumps(step(np.zeros((BATCH, 1, FEATURES + 1), np.float32), request_id="shape")), 400, "shape"),
        (json.dumps(step(x[:, :1], 31, "unknown-sequence")), 404, "unknown-sequence"),
        (b"\x01\x00", 400, None),  # shorter than the length prefix
        (PREFIX.pack(50) + b"{}", 400, None),  # a JSON length past the end of the message
        (PREFIX.pack(3) + b"\xff\xfe{", 400, None),  # a JSON header that is not UTF-8
    ]
    async with open_stream(_url(server)) as ws:
        first, outputs = await exchange(ws, step(x[:, :3], 32, "ok-1", sequence_start=True))
        got = [outputs[output_name]]
        for message, status, request_id in bad_messages:
            await ws.send(message)
            error = json.loads(await ws.recv())
            assert error["status"] == status, error
            assert error["error"], error
            assert error.get("id") == request_id, error
        # The same sequence goes on where it was: the failures touched nothing.
        _, outputs = await exchange(ws, step(x[:, 3:], 32, "ok-2"))
        got.append(outputs[output_name])
    np.testing.assert_allclose(np.concatenate(got, axis=1), reference.predict_chunks(x, 3), atol=1e-5, rtol=0)


async def test_a_wrong_shape_fails_alone_among_pipelined_steps(server: RunningServer, output_name: str) -> None:
    x = _x(5)
    async with open_stream(_url(server)) as ws:
        await ws.send(json.dumps(step(x[:, :1], 41, "a", sequence_start=True)))
        await ws.send(json.dumps(step(np.zeros((BATCH, 1, 7), np.float32), 41, "bad")))
        await ws.send(json.dumps(step(x[:, 1:2], 41, "b")))
        answers = [json.loads(await ws.recv()) for _ in range(3)]
    assert [a["id"] for a in answers] == ["a", "bad", "b"]
    assert answers[1]["status"] == 400 and "outputs" not in answers[1]
    assert answers[2]["parameters"]["sequence_step"] == 2


@pytest.mark.parametrize(("model", "version"), [("nope", None), ("lstm", "9"), ("lstm", "x")])
async def test_the_upgrade_is_refused_for_an_unknown_model_or_version(
    server: RunningServer, model: str, version: str | None
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with open_stream(_url(server, model, version)):
            pass
    response = refused.value.response
    assert response.status_code == 404
    assert "error" in json.loads(response.body)


async def test_a_model_removed_while_a_socket_is_open_is_not_found_per_message(
    server: RunningServer, keras_store: tuple[Path, Reference]
) -> None:
    x = np.zeros((1, 1, FEATURES), np.float32)
    async with open_stream(_url(server, "doomed")) as ws, httpx.AsyncClient(timeout=10) as client:
        document, _ = await exchange(ws, step(x, request_id="before"))
        assert document["id"] == "before"
        shutil.rmtree(keras_store[0] / "doomed")
        for _ in range(100):  # the store is polled every 0.2 s
            if (await client.get(f"http://{server.http_url}/v2/models/doomed")).status_code == 404:
                break
            await asyncio.sleep(0.05)
        error, _ = await exchange(ws, step(x, request_id="after"))
        assert error["status"] == 404 and error["id"] == "after", error
        assert "doomed" in error["error"]
        error, _ = await exchange(ws, step(x, request_id="still-open"))
        assert error["id"] == "still-open"


async def test_a_message_over_the_size_limit_is_refused(server: RunningServer, output_name: str) -> None:
    big = np.zeros((BATCH, MAX_REQUEST_BYTES // (BATCH * FEATURES * 4) + 1, FEATURES), np.float32)
    async with open_stream(_url(server)) as ws:
        await ws.send(binary_step(big, 51, sequence_start=True))
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009  # Message Too Big (RFC 6455)
    async with open_stream(_url(server)) as ws:  # the server goes on serving
        document, _ = await exchange(ws, step(_x(6)[:, :1], 52, "after", sequence_start=True))
        assert document["id"] == "after"


async def test_many_pipelined_messages_are_all_answered_in_order(server: RunningServer) -> None:
    x = _x(7)
    count = 60  # more than one socket's in-flight bound: the server reads them as it answers
    async with open_stream(_url(server)) as ws:
        for i in range(count):
            await ws.send(json.dumps(step(x[:, :1], None, f"m{i}")))  # stateless: they may run together
        ids = [json.loads(await ws.recv())["id"] for _ in range(count)]
    assert ids == [f"m{i}" for i in range(count)]


async def test_a_sequence_stepped_over_rest_continues_over_websocket_exactly(
    server: RunningServer, reference: Reference, output_name: str
) -> None:
    x = _x(8)
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(
            f"http://{server.http_url}/v2/models/lstm/infer", json=step(x[:, :2], "via-rest", sequence_start=True)
        )
    assert answer.status_code == 200, answer.text
    _, first = decode_answer(answer.text)
    async with open_stream(_url(server)) as ws:
        document, rest = await exchange(ws, step(x[:, 2:], "via-rest", "ws", sequence_end=True))
    assert document["parameters"]["sequence_step"] == 2
    got = np.concatenate([first[output_name], rest[output_name]], axis=1)
    np.testing.assert_allclose(got, reference.predict_chunks(x, 2), atol=1e-5, rtol=0)


async def test_a_forked_sequence_and_a_rewound_one_continue_over_websocket_exactly(
    server: RunningServer, reference: Reference, output_name: str
) -> None:
    """Fork and rewind are REST calls; each branch then steps over the socket and equals Keras run
    on that branch's whole prefix (Keras resets and predicts every chunk of it in turn)."""
    a, b, c, d, e = (_x(seed)[:, :2] for seed in range(20, 25))

    def keras_last(*chunks: np.ndarray) -> np.ndarray:
        return reference.predict_chunks(np.concatenate(chunks, axis=1), 2)[:, -2:]

    sessions = f"http://{server.http_url}/v2/models/lstm/sessions"
    async with open_stream(_url(server)) as ws, httpx.AsyncClient(timeout=30) as client:
        await exchange(ws, step(a, "tree", "a", sequence_start=True))
        await exchange(ws, step(b, "tree", "b"))
        forked = await client.post(f"{sessions}/tree/fork", json={"count": 1})
        assert forked.status_code == 200, forked.text
        (fork,) = [s["session_id"] for s in forked.json()["sessions"]]
        _, on_origin = await exchange(ws, step(c, "tree", "c", sequence_step=3))
        _, on_fork = await exchange(ws, step(d, fork, "d", sequence_step=3))
        rewound = await client.post(f"{sessions}/tree/rewind", json={"step": 1})
        assert rewound.status_code == 200, rewound.text
        document, after_rewind = await exchange(ws, step(e, "tree", "e", sequence_step=2))
        assert document["parameters"]["sequence_step"] == 2
    for served, expected in (
        (on_origin, keras_last(a, b, c)),
        (on_fork, keras_last(a, b, d)),
        (after_rewind, keras_last(a, e)),
    ):
        np.testing.assert_allclose(served[output_name], expected, atol=1e-5, rtol=0)
