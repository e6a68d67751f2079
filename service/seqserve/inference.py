"""The protocol-neutral request and response records.

REST and gRPC decode their wire formats into these and encode them back; the data plane only ever
sees these, so a behaviour is written once for every protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Tensor:
    """A named tensor with its V2 datatype; `data` already has `shape`."""

    name: str
    datatype: str
    data: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> list[int]:
        return list(self.data.shape)


@dataclass
class RequestedOutput:
    """An output the client asked for; `parameters` carries protocol extensions such as binary_data."""

    name: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    model_name: str
    model_version: str | None = None
    id: str | None = None
    inputs: list[Tensor] = field(default_factory=list)
    # None means "every output of the model", as in the V2 protocol.
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    # The caller, as authenticated by its API key (`seqserve.auth`): its sequences live in its
    # namespace. None with authentication off. Set by the front end, never read from the body.
    owner: str | None = None


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str | None
    outputs: list[Tensor]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: list[int]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


@dataclass
class SessionInfo:
    """A session as the session API shows it: its id, where it runs, how far it is, its states."""

    session_id: str
    model_name: str
    model_version: str
    step: int
    batch_size: int
    states: list[Tensor] = field(default_factory=list)
