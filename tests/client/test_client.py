"""seqserve.client against a real server: sessions stepped, exported, imported, forked and rewound,
sync and asyncio, typed errors, and retries that never apply a step twice (a proxy loses answers)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers.dropping_proxy import dropping_proxy
from helpers.onnx_models import run_directly, write_lstm_model
from helpers.server import RunningServer, running_server
from seqserve.client import (
    AsyncClient,
    Client,
    ConnectionLost,
    InvalidInput,
    NotFound,
    RetryPolicy,
    Unauthenticated,
    Unavailable,
)

CHUNKS = [(0, 2), (2, 3), (3, 6)]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("client")
    write_lstm_model(root, "lstm", 1, stateful=True)
    (root / "lstm" / "config.yaml").write_text("session_history: 4\n")
    return root


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[RunningServer]:
    with running_server(store) as running:
        yield running


def _x(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 6, 3)).astype(np.float32)


def _whole(store: Path, x: np.ndarray) -> np.ndarray:
    return run_directly(store / "lstm" / "1", {"x": x})["sequence"]


def test_a_session_stepped_in_chunks_equals_the_whole_sequence(server: RunningServer, store: Path) -> None:
    x = _x()
    with Client(server.http_url) as client, client.session("lstm") as s:
        parts = [s.step(x[:, a:b])["sequence"] for a, b in CHUNKS]
        assert s.sequence_step == 3 and s.batch_size == 0  # the batch size is learned by export_state
        states = s.export_state()
        assert set(states) == {"lstm.h", "lstm.c"} and s.batch_size == 2
    np.testing.assert_allclose(np.concatenate(parts, axis=1), _whole(store, x), atol=1e-6)
    np.testing.assert_array_equal(states["lstm.h"], parts[-1][:, -1])


def test_states_exported_from_one_session_continue_in_another(server: RunningServer, store: Path) -> None:
    x = _x(4)
    with Client(server.http_url) as client, client.session("lstm") as a:
        a.step(x[:, :3])
        with client.session("lstm", states=a.export_state()) as b:
            np.testing.assert_array_equal(b.step(x[:, 3:])["sequence"], a.step(x[:, 3:])["sequence"])
        with client.session("lstm") as c:
            c.import_state(a.export_state())
            assert c.batch_size == 2
            again = client.attach("lstm", c.id)
            assert again.sequence_step == 0 and again.batch_size == 2


def test_forks_go_on_independently_and_a_rewind_continues_from_its_step(server: RunningServer, store: Path) -> None:
    a, b, c, d = (_x(seed)[:, :2] for seed in (10, 11, 12, 13))
    with Client(server.http_url) as client, client.session("lstm") as s:
        s.step(a)
        s.step(b)
        left, right = s.fork(2)
        earlier = s.fork(step=1)[0]
        assert (left.sequence_step, earlier.sequence_step, left.model) == (2, 1, "lstm")
        s.rewind(1)
        assert s.sequence_step == 1
        np.testing.assert_allclose(s.step(c)["sequence"], _whole(store, np.concatenate([a, c], 1))[:, 2:], atol=1e-6)
        np.testing.assert_allclose(
            left.step(c)["sequence"], _whole(store, np.concatenate([a, b, c], 1))[:, 4:], atol=1e-6
        )
        np.testing.assert_allclose(
            right.step(d)["sequence"], _whole(store, np.concatenate([a, b, d], 1))[:, 4:], atol=1e-6
        )
        np.testing.assert_allclose(
            earlier.step(d)["sequence"], _whole(store, np.concatenate([a, d], 1))[:, 2:], atol=1e-6
        )
        with pytest.raises(InvalidInput, match="is not kept"):
            left.rewind(7)
        for fork in (left, right, earlier):
            fork.end()


def test_errors_are_typed(server: RunningServer) -> None:
    with Client(server.http_url) as client:
        with pytest.raises(NotFound, match="nope"):
            client.session("nope")
        with client.session("lstm") as s:
            with pytest.raises(InvalidInput) as wrong:
                s.step(np.zeros((2, 3, 5), np.float32))
            assert wrong.value.status == 400
            assert s.sequence_step == 0  # a refused step is not counted
            s.step(np.zeros((2, 3, 3), np.float32))
        with pytest.raises(NotFound):
            client.attach("lstm", s.id)  # ended when the block was left
        with pytest.raises(TypeError, match="dtype"):
            client.session("lstm").step(np.zeros((2, 3, 3), np.complex64))


def test_a_step_whose_answer_was_lost_is_sent_again_and_applied_once(server: RunningServer, store: Path) -> None:
    x = _x(5)
    host, port = server.http_url.split(":")
    with dropping_proxy(host, int(port)) as proxy, Client(proxy.address) as client, client.session("lstm") as s:
        first = s.step(x[:, :2])["sequence"]
        proxy.answers_to_drop = 1  # the server applies step 2; its answer never arrives
        second = s.step(x[:, 2:4])["sequence"]
        assert proxy.dropped == 1
        third = s.step(x[:, 4:])["sequence"]
        assert s.export_state() and s.sequence_step == 3
    # Applied twice, step 2 would have moved the state on: the third chunk would not match.
    np.testing.assert_allclose(np.concatenate([first, second, third], axis=1), _whole(store, x), atol=1e-6)


def test_a_create_whose_answer_was_lost_is_not_repeated(server: RunningServer) -> None:
    host, port = server.http_url.split(":")
    with dropping_proxy(host, int(port)) as proxy, Client(proxy.address) as client:
        proxy.answers_to_drop = 1
        with pytest.raises(ConnectionLost, match="may or may not have been applied"):
            client.session("lstm")


def test_retries_give_up_after_the_policy_s_attempts(server: RunningServer) -> None:
    host, port = server.http_url.split(":")
    policy = RetryPolicy(attempts=2, backoff=0.01)
    with dropping_proxy(host, int(port)) as proxy, Client(proxy.address, retry=policy) as client:
        s = client.session("lstm")
        proxy.answers_to_drop = 2
        with pytest.raises(Unavailable, match="connection failed") as failed:
            s.step(_x()[:, :1])
        assert failed.value.retryable and proxy.dropped == 2
        s.end()


def test_the_asyncio_client_matches_the_whole_sequence(server: RunningServer, store: Path) -> None:
    x = _x(6)

    async def run() -> np.ndarray:
        async with AsyncClient(server.http_url) as client, await client.session("lstm") as s:
            parts = [(await s.step(x[:, a:b]))["sequence"] for a, b in CHUNKS]
            states = await s.export_state()
            assert s.sequence_step == 3 and set(states) == {"lstm.h", "lstm.c"}
            with pytest.raises(InvalidInput):
                await s.step(np.zeros((2, 1, 7), np.float32))
            return np.concatenate(parts, axis=1)

    np.testing.assert_allclose(asyncio.run(run()), _whole(store, x), atol=1e-6)


def test_an_api_key_is_sent(store: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("alice:alice-key-0123456789abcdef\n")
    with running_server(store, env={"SEQSERVE_API_KEYS_FILE": str(keys)}) as keyed:
        with Client(keyed.http_url) as anonymous, pytest.raises(Unauthenticated):
            anonymous.session("lstm")
        with Client(keyed.http_url, api_key="alice-key-0123456789abcdef") as alice, alice.session("lstm") as s:
            assert s.step(_x()[:, :2])["sequence"].shape == (2, 2, 4)
