"""What the client sends and how it reads the answers, without doing any I/O.

The sync and asyncio clients (`seqserve.client.sync`, `seqserve.client.aio`) both send these
`Call`s through their own HTTP client, so the two cannot drift apart in what they say.

Retries are safe by construction. A call is sent again only when it cannot be applied twice:
- a numbered step (`sequence_step` k): the server applies step k once and answers a repeat of it
  with the stored answer (its step protocol), so a step whose answer was lost is simply sent again;
- reading, replacing the states, rewinding to a step and ending are idempotent (an end repeated
  after a lost answer finds the session gone, which is what was asked);
- creating and forking are not: they are repeated only when the server refused them before acting
  (429, 503) or the connection was never made; a connection lost after sending raises ConnectionLost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import numpy as np

from seqserve.client.errors import ConnectionLost, SeqserveClientError, Unavailable, error_for
from seqserve.client.tensors import HEADER_LENGTH, decode_response, encode_request

Arrays = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    content: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    # Safe to send again after the connection failed mid-call (module docstring).
    repeatable: bool = True
    # A 404 to a repeat means the first attempt did it (ending a session).
    gone_is_done: bool = False


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    content: bytes


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: exponential backoff, or the server's Retry-After when longer."""

    attempts: int = 4
    backoff: float = 0.05
    max_delay: float = 5.0

    def delay(self, attempt: int, error: SeqserveClientError) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up and raise `error`."""
        if not error.retryable or attempt + 1 >= self.attempts:
            return None
        return min(max(error.retry_after or 0.0, self.backoff * 2**attempt), self.max_delay)


@dataclass(frozen=True)
class SessionInfo:
    """A session as the server described it; `sequence_step` is the number of its last step."""

    session_id: str
    model: str
    version: str
    sequence_step: int
    batch_size: int
    states: dict[str, np.ndarray]


def http_options(url: str, api_key: str | None, timeout: float) -> dict[str, Any]:
    """httpx client options for a server at `url` (`host:port` or a URL), with its API key."""
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    return {"base_url": url if "://" in url else f"http://{url}", "headers": headers, "timeout": timeout}


def lost_connection(call: Call, connected: bool, cause: Exception) -> SeqserveClientError:
    """The error for a call whose connection failed; retryable when sending it again is safe."""
    if not connected or call.repeatable:
        error = Unavailable(f"{call.method} {call.path}: the connection failed ({type(cause).__name__}: {cause})")
        error.status = None
        return error
    return ConnectionLost(
        f"{call.method} {call.path}: the connection failed after the request was sent "
        f"({type(cause).__name__}); it may or may not have been applied"
    )


def refusal(reply: Reply) -> SeqserveClientError:
    """The typed error for an answer with an error status."""
    try:
        message = json.loads(reply.content)["error"]
    except (ValueError, KeyError, TypeError):
        message = reply.content[:500].decode(errors="replace") or f"HTTP {reply.status}"
    retry_after = reply.headers.get("retry-after")
    return error_for(reply.status, message, float(retry_after) if retry_after else None)


def _model_path(model: str, version: str | None = None) -> str:
    path = f"/v2/models/{quote(model, safe='')}"
    return path + (f"/versions/{quote(version, safe='')}" if version else "")


def _session_path(model: str, session_id: str) -> str:
    return f"{_model_path(model)}/sessions/{quote(session_id, safe='')}"


def metadata(model: str) -> Call:
    return Call("GET", _model_path(model))


def input_names(reply: Reply) -> list[str]:
    return [tensor["name"] for tensor in json.loads(reply.content)["inputs"]]


def create(model: str, version: str | None, states: Arrays | None) -> Call:
    content, headers = encode_request(states, None, {}) if states else (b"", {})
    return Call("POST", f"{_model_path(model, version)}/sessions", content, headers, repeatable=False)


def read(model: str, session_id: str) -> Call:
    return Call("GET", _session_path(model, session_id))


def replace(model: str, session_id: str, states: Arrays) -> Call:
    content, headers = encode_request(states, None, {})
    return Call("PUT", _session_path(model, session_id), content, headers)


def end(model: str, session_id: str) -> Call:
    return Call("DELETE", _session_path(model, session_id), gone_is_done=True)


def fork(model: str, session_id: str, count: int, step: int | None) -> Call:
    body: dict[str, int] = {"count": count} if step is None else {"count": count, "step": step}
    content = json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    return Call("POST", f"{_session_path(model, session_id)}/fork", content, headers, repeatable=False)


def rewind(model: str, session_id: str, step: int) -> Call:
    content = json.dumps({"step": step}).encode()
    return Call("POST", f"{_session_path(model, session_id)}/rewind", content, {"content-type": "application/json"})


def step(model: str, session_id: str, number: int, inputs: Arrays, outputs: Sequence[str] | None) -> Call:
    """Step `number` of the session: sent again after a lost answer, the server answers it once."""
    parameters = {"sequence_id": session_id, "sequence_step": number}
    content, headers = encode_request(inputs, outputs, parameters)
    return Call("POST", f"{_model_path(model)}/infer", content, headers)


def session_of(reply: Reply) -> SessionInfo:
    head, states = decode_response(reply.content, reply.headers.get(HEADER_LENGTH))
    parameters = head["parameters"]
    return SessionInfo(
        session_id=parameters["session_id"],
        model=head["model_name"],
        version=str(head.get("model_version", "")),
        sequence_step=int(parameters["sequence_step"]),
        batch_size=int(parameters["batch_size"]),
        states=states,
    )


def outputs_of(reply: Reply) -> dict[str, np.ndarray]:
    return decode_response(reply.content, reply.headers.get(HEADER_LENGTH))[1]


def forks_of(reply: Reply, model: str) -> list[SessionInfo]:
    """The sessions a fork made (their states stay on the server)."""
    return [
        SessionInfo(
            session_id=made["session_id"],
            model=model,
            version=str(made.get("model_version", "")),
            sequence_step=int(made["sequence_step"]),
            batch_size=int(made["batch_size"]),
            states={},
        )  # fmt: skip
        for made in json.loads(reply.content)["sessions"]
    ]


def named_inputs(inputs: np.ndarray | Arrays, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The step's inputs by name; a bare array is the model's only input."""
    if isinstance(inputs, Mapping):
        return {name: np.asarray(value) for name, value in inputs.items()}
    if len(names) != 1:
        raise TypeError(f"this model has inputs {list(names)}: give a dict of arrays by name")
    return {names[0]: np.asarray(inputs)}
