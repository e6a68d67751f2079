"""Protobuf messages of our gRPC services <-> the protocol-neutral `seqserve.inference` records.

The servicer only ever calls these and the data plane; nothing here knows about models, so the
same request means the same thing over gRPC as over REST.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from seqserve.errors import InvalidInput
from seqserve.grpc import tensors
from seqserve.grpc.generated import grpc_service_pb2 as pb
from seqserve.grpc.generated import session_service_pb2 as spb
from seqserve.inference import InferRequest, InferResponse, ModelMetadata, RequestedOutput, SessionInfo, Tensor
from seqserve.shapes import check_shape

_INT64_MAX = 2**63 - 1
_UINT64_MAX = 2**64 - 1

# -- parameters ----------------------------------------------------------------------------------


def parameters_from_proto(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    """An InferParameter map as plain Python values (bool, int, str or float)."""
    result: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        if choice is None:
            raise InvalidInput(f"parameter '{key}' has no value")
        result[key] = getattr(parameter, choice)
    return result


def parameters_to_proto(values: Mapping[str, Any], target: MutableMapping[str, pb.InferParameter]) -> None:
    """Fills an InferParameter map; integers that do not fit int64 go out as uint64, as Triton's ids do."""
    for key, value in values.items():
        parameter = target[key]
        # bool before int: a bool is an int in Python, but not on the wire.
        if isinstance(value, bool | np.bool_):
            parameter.bool_param = bool(value)
        elif isinstance(value, numbers.Integral):
            number = int(value)
            if number > _INT64_MAX:
                if number > _UINT64_MAX:
                    raise ValueError(f"parameter '{key}' = {number} does not fit in 64 bits")
                parameter.uint64_param = number
            else:
                parameter.int64_param = number
        elif isinstance(value, numbers.Real):
            parameter.double_param = float(value)
        elif isinstance(value, str):
            parameter.string_param = value
        else:
            raise TypeError(f"parameter '{key}' has a {type(value).__name__} value, which InferParameter cannot carry")


# -- inference -----------------------------------------------------------------------------------


def infer_request_from_proto(request: pb.ModelInferRequest) -> InferRequest:
    """Decodes a ModelInferRequest, its tensors given either as raw_input_contents or as typed contents."""
    # No outputs named means every output, as in the V2 protocol.
    outputs = [RequestedOutput(o.name, parameters_from_proto(o.parameters)) for o in request.outputs] or None
    return InferRequest(
        model_name=request.model_name,
        model_version=request.model_version or None,
        id=request.id or None,
        inputs=tensors_from_proto(request.inputs, request.raw_input_contents),
        outputs=outputs,
        parameters=parameters_from_proto(request.parameters),
    )


def tensors_from_proto(
    given: Sequence[pb.ModelInferRequest.InferInputTensor],
    raw: Sequence[bytes],
    raw_field: str = "raw_input_contents",
    kind: str = "input",
) -> list[Tensor]:
    """Decodes V2 tensors whose data is either in `raw` (one entry per tensor, in order) or in their contents."""
    if raw and len(raw) != len(given):
        raise InvalidInput(
            f"the request has {len(given)} {kind}(s) but {len(raw)} {raw_field} entries; "
            f"expected one entry per {kind}, in the order of the {kind}s"
        )
    decoded = []
    for index, tensor in enumerate(given):
        shape = list(tensor.shape)
        check_shape(tensor.name, shape, what=kind)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidInput(
                    f"{kind} '{tensor.name}' has typed contents although the request uses {raw_field}; "
                    "use one or the other"
                )
            data = tensors.from_raw(tensor.name, tensor.datatype, shape, raw[index], what=kind)
        else:
            data = tensors.from_contents(tensor.name, tensor.datatype, shape, tensor.contents)
        parameters = parameters_from_proto(tensor.parameters) if tensor.parameters else {}
        decoded.append(Tensor(tensor.name, tensor.datatype, data, parameters))
    return decoded


def infer_response_to_proto(
    response: InferResponse, message: pb.ModelInferResponse | None = None
) -> pb.ModelInferResponse:
    """Encodes a response with raw_output_contents, as Triton answers and tritonclient expects.

    `message` may be a field of an enclosing message (a stream's `infer_response`) to fill in place:
    building a message apart and copying it in costs more than the encoding itself for one step.
    """
    if message is None:
        message = pb.ModelInferResponse()
    message.model_name, message.model_version, message.id = (
        response.model_name,
        response.model_version,
        response.id or "",
    )
    if response.parameters:
        parameters_to_proto(response.parameters, message.parameters)
    for tensor in response.outputs:
        output = message.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.data.shape)
        if tensor.parameters:
            parameters_to_proto(tensor.parameters, output.parameters)
        message.raw_output_contents.append(tensors.to_raw(tensor.datatype, tensor.data))
    return message


def stream_error_to_proto(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    """The stream's answer to a failed request: the error, and enough of the request to tell which one failed."""
    return pb.ModelStreamInferResponse(
        error_message=message,
        infer_response=pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        ),
    )


# -- health and metadata -------------------------------------------------------------------------


def server_metadata_to_proto(metadata: Mapping[str, Any]) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(
        name=str(metadata["name"]), version=str(metadata["version"]), extensions=list(metadata["extensions"])
    )


def model_metadata_to_proto(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.outputs],
    )


# -- the session service -------------------------------------------------------------------------


def session_states_from_proto(
    states: Sequence[pb.ModelInferRequest.InferInputTensor], raw: Sequence[bytes]
) -> list[Tensor]:
    """States sent to CreateSession / SetSessionState, encoded as ModelInfer encodes its inputs."""
    return tensors_from_proto(states, raw, raw_field="raw_state_contents", kind="state")


def session_to_proto(info: SessionInfo) -> spb.Session:
    """A session and its states, the states in raw_state_contents as ModelInfer answers its outputs."""
    message = spb.Session(
        session_id=info.session_id,
        model_name=info.model_name,
        model_version=info.model_version,
        step=info.step,
        batch_size=info.batch_size,
    )
    for tensor in info.states:
        message.states.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        message.raw_state_contents.append(tensors.to_raw(tensor.datatype, tensor.data))
    return message
