"""seqserve.SessionService over the data plane: our session API (server-issued ids, state read and
replaced, fork, rewind, explicit end) for gRPC clients. Decode, call, encode, nothing else.

Errors are not handled here: a SeqserveError raised by a method becomes its gRPC status in
`seqserve.grpc.interceptor`, as for the inference service.
"""

from __future__ import annotations

import grpc

from seqserve.dataplane import DataPlane
from seqserve.errors import InvalidInput
from seqserve.grpc import converters
from seqserve.grpc.auth import caller_of
from seqserve.grpc.generated import session_service_pb2 as spb
from seqserve.grpc.generated.session_service_pb2_grpc import SessionServiceServicer


class SessionServicer(SessionServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    def _caller(self, context: grpc.aio.ServicerContext) -> str | None:
        return caller_of(self._dataplane.auth, context)

    async def CreateSession(self, request: spb.CreateSessionRequest, context: grpc.aio.ServicerContext) -> spb.Session:
        self._dataplane.limits.check_tensor_count(len(request.states), kind="state")
        states = converters.session_states_from_proto(request.states, request.raw_state_contents)
        info = await self._dataplane.session_api.create(
            _required(request.model_name, "model_name"), request.model_version or None, states, self._caller(context)
        )
        return converters.session_to_proto(info)

    async def GetSession(self, request: spb.GetSessionRequest, context: grpc.aio.ServicerContext) -> spb.Session:
        info = await self._dataplane.session_api.get(*_address(request), self._caller(context))
        return converters.session_to_proto(info)

    async def SetSessionState(
        self, request: spb.SetSessionStateRequest, context: grpc.aio.ServicerContext
    ) -> spb.Session:
        self._dataplane.limits.check_tensor_count(len(request.states), kind="state")
        states = converters.session_states_from_proto(request.states, request.raw_state_contents)
        info = await self._dataplane.session_api.set_states(*_address(request), states, self._caller(context))
        return converters.session_to_proto(info)

    async def EndSession(
        self, request: spb.EndSessionRequest, context: grpc.aio.ServicerContext
    ) -> spb.EndSessionResponse:
        await self._dataplane.session_api.end(*_address(request), self._caller(context))
        return spb.EndSessionResponse()

    async def ForkSession(
        self, request: spb.ForkSessionRequest, context: grpc.aio.ServicerContext
    ) -> spb.ForkSessionResponse:
        step = request.step if request.HasField("step") else None
        forks = await self._dataplane.session_api.fork(
            _required(request.model_name, "model_name"),
            _sequence(request),
            request.count or 1,
            step,
            self._caller(context),
        )
        return spb.ForkSessionResponse(sessions=[converters.session_to_proto(f) for f in forks])

    async def RewindSession(self, request: spb.RewindSessionRequest, context: grpc.aio.ServicerContext) -> spb.Session:
        info = await self._dataplane.session_api.rewind(
            _required(request.model_name, "model_name"), _sequence(request), request.step, self._caller(context)
        )
        return converters.session_to_proto(info)


def _sequence(request: spb.ForkSessionRequest | spb.RewindSessionRequest) -> int | str:
    """The session or sequence named: `session_id` (a string) or `sequence_id` (a uint64), one of them."""
    if request.session_id and request.sequence_id:
        raise InvalidInput("give 'session_id' or 'sequence_id', not both")
    if request.sequence_id:
        return int(request.sequence_id)
    return _required(request.session_id, "session_id")


def _address(request: spb.GetSessionRequest | spb.SetSessionStateRequest | spb.EndSessionRequest) -> tuple[str, str]:
    return _required(request.model_name, "model_name"), _required(request.session_id, "session_id")


def _required(value: str, field: str) -> str:
    # proto3 cannot tell an absent string from an empty one; an empty name is always a client's slip.
    if not value:
        raise InvalidInput(f"'{field}' is required")
    return value
