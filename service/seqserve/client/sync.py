"""The blocking client: `Client` and its `Session`s, over HTTP (httpx).

with Client("localhost:8000") as client, client.session("chars") as s:
    y = s.step(x)["next_char"]
    branches = s.fork(3)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from types import TracebackType

import httpx
import numpy as np

from seqserve.client import calls
from seqserve.client.calls import Arrays, Call, Reply, RetryPolicy, SessionInfo
from seqserve.client.errors import NotFound


class Client:
    """One server (`host:port` or a URL); `api_key` when the server has API keys on."""

    def __init__(
        self, url: str, api_key: str | None = None, timeout: float = 30.0, retry: RetryPolicy | None = None
    ) -> None:
        self._http = httpx.Client(**calls.http_options(url, api_key, timeout))
        self.retry = retry or RetryPolicy()
        self._inputs: dict[str, list[str]] = {}

    def session(self, model: str, version: str | None = None, states: Arrays | None = None) -> Session:
        """A new session of `model` (ended when used as a context manager and left)."""
        info = calls.session_of(self.send(calls.create(model, version, states)))
        return Session(self, info)

    def attach(self, model: str, session_id: str) -> Session:
        """A session that exists already (made by another process, or a Triton sequence id)."""
        return Session(self, calls.session_of(self.send(calls.read(model, session_id))))

    def input_names(self, model: str) -> list[str]:
        if model not in self._inputs:
            self._inputs[model] = calls.input_names(self.send(calls.metadata(model)))
        return self._inputs[model]

    def send(self, call: Call) -> Reply:
        """The call's answer, sent again as `calls` allows; raises the typed error otherwise."""
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, content=call.content, headers=dict(call.headers))
            except httpx.TransportError as e:
                error = calls.lost_connection(call, not isinstance(e, httpx.ConnectError), e)
            else:
                reply = Reply(response.status_code, response.headers, response.content)
                if reply.status < 400 or (attempt and call.gone_is_done and reply.status == 404):
                    return reply
                error = calls.refusal(reply)
            delay = self.retry.delay(attempt, error)
            if delay is None:
                raise error
            time.sleep(delay)
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Session:
    """A server-held session: its states live on the server, between steps and between clients."""

    def __init__(self, client: Client, info: SessionInfo) -> None:
        self.client = client
        self.id, self.model = info.session_id, info.model
        self.sequence_step, self.batch_size = info.sequence_step, info.batch_size

    def step(self, inputs: np.ndarray | Arrays, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """The model's outputs for the next chunk of the sequence (all outputs unless named)."""
        named = calls.named_inputs(inputs, self.client.input_names(self.model))
        reply = self.client.send(calls.step(self.model, self.id, self.sequence_step + 1, named, outputs))
        self.sequence_step += 1
        return calls.outputs_of(reply)

    def fork(self, count: int = 1, step: int | None = None) -> list[Session]:
        """`count` new sessions holding copies of this one's state (or of its state after `step`,
        with the model's session_history on); each goes on independently from there."""
        made = self.client.send(calls.fork(self.model, self.id, count, step))
        return [Session(self.client, info) for info in calls.forks_of(made, self.model)]

    def rewind(self, step: int) -> None:
        """Back to the state after `step` (kept by the model's session_history); the next step is step + 1."""
        info = calls.session_of(self.client.send(calls.rewind(self.model, self.id, step)))
        self.sequence_step = info.sequence_step

    def export_state(self) -> dict[str, np.ndarray]:
        """The session's states by name (`lstm.h`, `lstm.c`, ...), as Keras layer states."""
        info = calls.session_of(self.client.send(calls.read(self.model, self.id)))
        self.sequence_step, self.batch_size = info.sequence_step, info.batch_size
        return info.states

    def import_state(self, states: Mapping[str, np.ndarray]) -> None:
        """Replaces every state (Keras `reset_states(states=...)`); the step count stays."""
        info = calls.session_of(self.client.send(calls.replace(self.model, self.id, states)))
        self.batch_size = info.batch_size

    def end(self) -> None:
        self.client.send(calls.end(self.model, self.id))

    def __enter__(self) -> Session:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        with contextlib.suppress(NotFound):  # expired or ended already: nothing to free
            self.end()
