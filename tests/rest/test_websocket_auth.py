"""API keys on WebSocket streaming: the upgrade needs a key (the `Authorization` header, or the
subprotocol a browser can set), another key's sequence is NOT_FOUND as over REST, keys never reach the log."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus

from helpers.onnx_models import run_directly, write_lstm_model
from helpers.server import RunningServer, running_server
from helpers.websocket_client import exchange, open_stream, step

ALICE, BOB = "alice-key-0123456789abcdef", "bob/key+0123456789abcdef=="  # Bob's is not a subprotocol token as is


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("store")
    write_lstm_model(store, "lstm", 1, stateful=True)
    return store


@pytest.fixture(scope="module")
def server(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    keys = tmp_path_factory.mktemp("secret") / "api-keys"
    keys.write_text(f"alice:{ALICE}\nbob:{BOB}\n")
    env = {"SEQSERVE_API_KEYS_FILE": str(keys)}
    with running_server(store, "--grpc-port", "0", "--log-level", "debug", env=env) as running:
        yield running


def _url(server: RunningServer) -> str:
    return f"ws://{server.http_url}/v2/models/lstm/stream"


def _key_protocol(key: str) -> str:
    return "base64url.bearer.seqserve." + base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 3)).astype(np.float32)


@pytest.mark.parametrize(
    "credentials",
    [
        {},
        {"additional_headers": {"Authorization": "Bearer not-a-key-0123456789"}},
        {"subprotocols": ["seqserve.v2"]},
        {"subprotocols": ["seqserve.v2", _key_protocol(ALICE[:-1])]},
        {"subprotocols": ["seqserve.v2", "base64url.bearer.seqserve.***"]},
    ],
)
async def test_the_upgrade_without_a_valid_key_is_refused_with_401(server: RunningServer, credentials: dict) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with open_stream(_url(server), **credentials):
            pass
    response = refused.value.response
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "API key" in json.loads(response.body)["error"]


async def test_a_key_in_the_header_or_the_subprotocol_is_let_in(server: RunningServer, store: Path) -> None:
    x = _x(0)
    expected = run_directly(store / "lstm" / "1", {"x": x})["sequence"]
    async with open_stream(_url(server), additional_headers={"Authorization": f"Bearer {ALICE}"}) as ws:
        assert ws.subprotocol is None
        _, outputs = await exchange(ws, step(x, 1, sequence_start=True))
        np.testing.assert_allclose(outputs["sequence"], expected, atol=1e-6)
    # A browser's way: the application protocol and the key, base64url, as offered subprotocols.
    async with open_stream(_url(server), subprotocols=["seqserve.v2", _key_protocol(BOB)]) as ws:
        assert ws.subprotocol == "seqserve.v2"  # never the one carrying the key
        _, outputs = await exchange(ws, step(x, 1, sequence_start=True))
        np.testing.assert_allclose(outputs["sequence"], expected, atol=1e-6)


async def test_another_keys_sequence_is_not_found_and_the_owner_goes_on_exactly(
    server: RunningServer, store: Path
) -> None:
    x = _x(1)
    alice = open_stream(_url(server), additional_headers={"Authorization": f"Bearer {ALICE}"})
    bob = open_stream(_url(server), subprotocols=["seqserve.v2", _key_protocol(BOB)])
    async with alice as mine, bob as theirs:
        _, first = await exchange(mine, step(x[:, :1], "shared-7", "a1", sequence_start=True))
        for flags in [{}, {"sequence_end": True}]:
            refused, _ = await exchange(theirs, step(x[:, 1:2], "shared-7", "b", **flags))
            assert refused["status"] == 404, refused  # not 403: no oracle for probing ids
            assert refused["id"] == "b"
        _, second = await exchange(mine, step(x[:, 1:], "shared-7", "a2"))
    expected = run_directly(store / "lstm" / "1", {"x": x})["sequence"]
    np.testing.assert_allclose(np.concatenate([first["sequence"], second["sequence"]], axis=1), expected, atol=1e-6)


def test_keys_never_reach_the_log_and_refusals_are_no_errors(server: RunningServer) -> None:
    log = server.log()
    assert "WebSocket" in log  # uvicorn logged the upgrades it answered
    assert "< authorization: [hidden]" in log  # the debug log shows the headers, not the keys
    for key in (ALICE, BOB, _key_protocol(ALICE), _key_protocol(BOB)):
        assert key not in log
    assert "ERROR" not in log  # a refused upgrade is not the server's error
