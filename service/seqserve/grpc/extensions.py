"""Protobuf <-> seqserve for Triton's model configuration, statistics and repository extensions.

The configuration and the statistics are built once, in Triton's JSON shape (what REST answers),
and parsed here into the messages: the two protocols cannot disagree, and a field either protocol
answers is one `grpc_service.proto` declares (ParseDict refuses any other).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from google.protobuf import json_format

from seqserve.errors import InvalidInput
from seqserve.grpc.generated import grpc_service_pb2 as pb


class IndexRow(Protocol):
    name: str
    version: str
    state: str
    reason: str


def model_config_to_proto(config: dict[str, Any]) -> pb.ModelConfigResponse:
    return pb.ModelConfigResponse(config=json_format.ParseDict(config, pb.ModelConfig()))


def model_statistics_to_proto(statistics: dict[str, Any]) -> pb.ModelStatisticsResponse:
    return json_format.ParseDict(statistics, pb.ModelStatisticsResponse())


def repository_index_to_proto(rows: Iterable[IndexRow]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(name=r.name, version=r.version, state=r.state, reason=r.reason)
            for r in rows
        ]
    )


def load_parameters(
    name: str, parameters: Mapping[str, pb.ModelRepositoryParameter]
) -> tuple[str | None, dict[str, bytes]]:
    """A load request's `config` (Triton's JSON, a string) and its `file:<version>/<file>` contents (bytes)."""
    config: str | None = None
    files: dict[str, bytes] = {}
    for key, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        if key == "config":
            if kind != "string_param":
                raise InvalidInput(f"load of model '{name}': parameter 'config' must be a string of JSON")
            config = parameter.string_param
        elif key.startswith("file:"):
            if kind != "bytes_param":
                raise InvalidInput(f"load of model '{name}': parameter '{key}' must carry the file's bytes")
            files[key] = parameter.bytes_param
        else:
            raise InvalidInput(
                f"load of model '{name}': unknown parameter '{key}' (expected 'config' or 'file:<version>/<file>')"
            )
    return config, files


def check_unload_parameters(name: str, parameters: Mapping[str, pb.ModelRepositoryParameter]) -> None:
    """Unload takes `unload_dependents` (a bool) only; no model here has dependents, so it changes nothing."""
    for key, parameter in parameters.items():
        if key != "unload_dependents" or parameter.WhichOneof("parameter_choice") != "bool_param":
            raise InvalidInput(f"unload of model '{name}': the only parameter is unload_dependents (true or false)")
