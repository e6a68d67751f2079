from . import grpc_service_pb2 as _grpc_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateSessionRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "states", "raw_state_contents")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    RAW_STATE_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    states: _containers.RepeatedCompositeFieldContainer[_grpc_service_pb2.ModelInferRequest.InferInputTensor]
    raw_state_contents: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_grpc_service_pb2.ModelInferRequest.InferInputTensor, _Mapping]]] = ..., raw_state_contents: _Optional[_Iterable[bytes]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("model_name", "session_id")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    session_id: str
    def __init__(self, model_name: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class SetSessionStateRequest(_message.Message):
    __slots__ = ("model_name", "session_id", "states", "raw_state_contents")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    RAW_STATE_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    session_id: str
    states: _containers.RepeatedCompositeFieldContainer[_grpc_service_pb2.ModelInferRequest.InferInputTensor]
    raw_state_contents: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, model_name: _Optional[str] = ..., session_id: _Optional[str] = ..., states: _Optional[_Iterable[_Union[_grpc_service_pb2.ModelInferRequest.InferInputTensor, _Mapping]]] = ..., raw_state_contents: _Optional[_Iterable[bytes]] = ...) -> None: ...

class EndSessionRequest(_message.Message):
    __slots__ = ("model_name", "session_id")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    session_id: str
    def __init__(self, model_name: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class EndSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ForkSessionRequest(_message.Message):
    __slots__ = ("model_name", "session_id", "sequence_id", "count", "step")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    session_id: str
    sequence_id: int
    count: int
    step: int
    def __init__(self, model_name: _Optional[str] = ..., session_id: _Optional[str] = ..., sequence_id: _Optional[int] = ..., count: _Optional[int] = ..., step: _Optional[int] = ...) -> None: ...

class ForkSessionResponse(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[Session]
    def __init__(self, sessions: _Optional[_Iterable[_Union[Session, _Mapping]]] = ...) -> None: ...

class RewindSessionRequest(_message.Message):
    __slots__ = ("model_name", "session_id", "sequence_id", "step")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    session_id: str
    sequence_id: int
    step: int
    def __init__(self, model_name: _Optional[str] = ..., session_id: _Optional[str] = ..., sequence_id: _Optional[int] = ..., step: _Optional[int] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "model_name", "model_version", "step", "batch_size", "states", "raw_state_contents")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    RAW_STATE_CONTENTS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    model_name: str
    model_version: str
    step: int
    batch_size: int
    states: _containers.RepeatedCompositeFieldContainer[_grpc_service_pb2.ModelInferResponse.InferOutputTensor]
    raw_state_contents: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, session_id: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., step: _Optional[int] = ..., batch_size: _Optional[int] = ..., states: _Optional[_Iterable[_Union[_grpc_service_pb2.ModelInferResponse.InferOutputTensor, _Mapping]]] = ..., raw_state_contents: _Optional[_Iterable[bytes]] = ...) -> None: ...
