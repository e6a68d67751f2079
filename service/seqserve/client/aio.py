"""The asyncio client: `AsyncClient` and its `AsyncSession`s, the same calls as `seqserve.client.sync`.

async with AsyncClient("localhost:8000") as client, await client.session("chars") as s:
    y = (await s.step(x))["next_char"]
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from types import TracebackType

import httpx
import numpy as np

from seqserve.client import calls
from seqserve.client.calls import Arrays, Call, Reply, RetryPolicy, SessionInfo
from seqserve.client.errors import NotFound


class AsyncClient:
    """One server (`host:port` or a URL); `api_key` when the server has API keys on."""

    def __init__(
        self, url: str, api_key: str | None = None, timeout: float = 30.0, retry: RetryPolicy | None = None
    ) -> None:
        self._http = httpx.AsyncClient(**calls.http_options(url, api_key, timeout))
        self.retry = retry or RetryPolicy()
        self._inputs: dict[str, list[str]] = {}

    async def session(self, model: str, version: str | None = None, states: Arrays | None = None) -> AsyncSession:
        """A new session of `model` (ended when used with `async with` and left)."""
        info = calls.session_of(await self.send(calls.create(model, version, states)))
        return AsyncSession(self, info)

    async def attach(self, model: str, session_id: str) -> AsyncSession:
        """A session that exists already (made by another process, or a Triton sequence id)."""
        return AsyncSession(self, calls.session_of(await self.send(calls.read(model, session_id))))

    async def input_names(self, model: str) -> list[str]:
        if model not in self._inputs:
            self._inputs[model] = calls.input_names(await self.send(calls.metadata(model)))
        return self._inputs[model]

    async def send(self, call: Call) -> Reply:
        """The call's answer, sent again as `calls` allows; raises the typed error otherwise."""
        attempt = 0
        while True:
            try:
                response = await self._http.request(
                    call.method, call.path, content=call.content, headers=dict(call.headers)
                )
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
            await asyncio.sleep(delay)
            attempt += 1

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncSession:
    """A server-held session; the methods of `seqserve.client.sync.Session`, awaited."""

    def __init__(self, client: AsyncClient, info: SessionInfo) -> None:
        self.client = client
        self.id, self.model = info.session_id, info.model
        self.sequence_step, self.batch_size = info.sequence_step, info.batch_size

    async def step(self, inputs: np.ndarray | Arrays, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        named = calls.named_inputs(inputs, await self.client.input_names(self.model))
        reply = await self.client.send(calls.step(self.model, self.id, self.sequence_step + 1, named, outputs))
        self.sequence_step += 1
        return calls.outputs_of(reply)

    async def fork(self, count: int = 1, step: int | None = None) -> list[AsyncSession]:
        made = await self.client.send(calls.fork(self.model, self.id, count, step))
        return [AsyncSession(self.client, info) for info in calls.forks_of(made, self.model)]

    async def rewind(self, step: int) -> None:
        info = calls.session_of(await self.client.send(calls.rewind(self.model, self.id, step)))
        self.sequence_step = info.sequence_step

    async def export_state(self) -> dict[str, np.ndarray]:
        info = calls.session_of(await self.client.send(calls.read(self.model, self.id)))
        self.sequence_step, self.batch_size = info.sequence_step, info.batch_size
        return info.states

    async def import_state(self, states: Mapping[str, np.ndarray]) -> None:
        info = calls.session_of(await self.client.send(calls.replace(self.model, self.id, states)))
        self.batch_size = info.batch_size

    async def end(self) -> None:
        await self.client.send(calls.end(self.model, self.id))

    async def __aenter__(self) -> AsyncSession:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        with contextlib.suppress(NotFound):  # expired or ended already: nothing to free
            await self.end()
