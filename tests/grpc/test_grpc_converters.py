"""Protobuf <-> seqserve.inference records, and the wire contract with Triton's own descriptors.

This module imports seqserve.grpc *and* tritonclient.grpc into one process on purpose. Both
define `inference.ModelInferRequest` and friends; protobuf's default descriptor pool refuses a
second definition of a name, so our generated code registers its messages in a private pool
(scripts/gen_proto.sh). These tests would fail at import if that ever regressed.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import descriptor, descriptor_pool
from tritonclient.grpc import model_config_pb2 as triton_config_pb
from tritonclient.grpc import service_pb2 as triton_pb

from seqserve.errors import InvalidInput
from seqserve.grpc import converters, tensors
from seqserve.grpc.generated import grpc_service_pb2 as pb
from seqserve.inference import InferResponse, ModelMetadata, Tensor, TensorMetadata

# -- the wire contract -------------------------------------------------------------------------------


# Messages of which seqserve declares only the fields it fills (model_config.proto's ModelConfig
# and its parts, the statistics without memory usage and per-response statistics). Each field it
# declares must still be Triton's, number and type; every other message is Triton's whole.
_SUBSETS = {
    "ModelConfig", "ModelInput", "ModelOutput", "ModelInstanceGroup", "ModelDynamicBatching",
    "ModelSequenceBatching", "StrategyOldest", "State", "ModelStatistics",
}  # fmt: skip


def _field_signature(field: descriptor.FieldDescriptor) -> tuple[object, ...]:
    return (
        field.name,
        field.number,
        field.type,
        field.is_repeated,
        field.message_type and field.message_type.full_name,
        field.enum_type and field.enum_type.full_name,
    )


def _assert_same_enum(ours: descriptor.EnumDescriptor, theirs: descriptor.EnumDescriptor) -> None:
    assert {(v.name, v.number) for v in ours.values} <= {(v.name, v.number) for v in theirs.values}, ours.full_name


def _assert_same_message(ours: descriptor.Descriptor, theirs: descriptor.Descriptor) -> None:
    fields = [_field_signature(f) for f in ours.fields]
    if ours.name in _SUBSETS:
        by_number = {f.number: _field_signature(f) for f in theirs.fields}
        assert [by_number.get(f.number) for f in ours.fields] == fields, ours.full_name
        assert {o.name for o in ours.oneofs} <= {o.name for o in theirs.oneofs}, ours.full_name
    else:
        assert fields == [_field_signature(f) for f in theirs.fields], ours.full_name
        assert [o.name for o in ours.oneofs] == [o.name for o in theirs.oneofs], ours.full_name
    for nested in ours.nested_types:
        _assert_same_message(nested, theirs.nested_types_by_name[nested.name])
    for enum in ours.enum_types:
        _assert_same_enum(enum, theirs.enum_types_by_name[enum.name])


def test_every_message_matches_tritons_field_for_field() -> None:
    # Triton's configuration messages live in its model_config.proto; the rest in grpc_service.proto.
    theirs = {**triton_config_pb.DESCRIPTOR.message_types_by_name, **triton_pb.DESCRIPTOR.message_types_by_name}
    for name, ours in pb.DESCRIPTOR.message_types_by_name.items():
        _assert_same_message(ours, theirs[name])
    for name, enum in pb.DESCRIPTOR.enum_types_by_name.items():
        _assert_same_enum(enum, triton_config_pb.DESCRIPTOR.enum_types_by_name[name])


def test_every_rpc_matches_tritons_method() -> None:
    ours = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    theirs = triton_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert ours.full_name == theirs.full_name == "inference.GRPCInferenceService"
    for method in ours.methods:
        twin = theirs.methods_by_name[method.name]
        assert (method.input_type.full_name, method.output_type.full_name) == (
            twin.input_type.full_name,
            twin.output_type.full_name,
        )
        assert (method.client_streaming, method.server_streaming) == (twin.client_streaming, twin.server_streaming)
    assert {m.name for m in ours.methods} == {
        "ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer", "ModelStreamInfer",
        "ModelConfig", "ModelStatistics", "RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload",
    }  # fmt: skip


def test_our_messages_stay_out_of_the_default_descriptor_pool() -> None:
    assert pb.DESCRIPTOR.pool is not descriptor_pool.Default()
    assert descriptor_pool.Default().FindMessageTypeByName("inference.ModelInferRequest") is (
        triton_pb.ModelInferRequest.DESCRIPTOR
    )


def test_seqserve_grpc_imports_before_tritonclient_grpc_too() -> None:
    # This module imported tritonclient first; the other order must work as well.
    code = "import seqserve.grpc.server, tritonclient.grpc; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_a_request_from_tritons_messages_decodes_with_ours() -> None:
    theirs = triton_pb.ModelInferRequest(model_name="lstm", model_version="2", id="r1")
    theirs.parameters["sequence_id"].uint64_param = 2**64 - 1
    theirs.inputs.add(name="x", datatype="FP32", shape=[1, 2]).contents.fp32_contents.extend([0.5, -1.25])
    request = converters.infer_request_from_proto(pb.ModelInferRequest.FromString(theirs.SerializeToString()))
    assert (request.model_name, request.model_version, request.id) == ("lstm", "2", "r1")
    assert request.parameters == {"sequence_id": 2**64 - 1}
    np.testing.assert_array_equal(request.inputs[0].data, np.array([[0.5, -1.25]], np.float32))


# -- parameters ------------------------------------------------------------------------------------


def test_parameters_of_every_kind_round_trip() -> None:
    values = {"flag": True, "count": -3, "big": 2**64 - 1, "ratio": 0.25, "name": "abc", "np": np.int32(5)}
    message = pb.ModelInferResponse()
    converters.parameters_to_proto(values, message.parameters)
    assert message.parameters["flag"].WhichOneof("parameter_choice") == "bool_param"
    assert message.parameters["count"].WhichOneof("parameter_choice") == "int64_param"
    assert message.parameters["big"].WhichOneof("parameter_choice") == "uint64_param"
    assert converters.parameters_from_proto(message.parameters) == {**values, "np": 5}


def test_a_parameter_without_a_value_is_invalid() -> None:
    request = pb.ModelInferRequest()
    request.parameters["empty"].SetInParent()
    with pytest.raises(InvalidInput, match="parameter 'empty' has no value"):
        converters.parameters_from_proto(request.parameters)


def test_a_value_inferparameter_cannot_carry_is_a_bug_not_a_client_error() -> None:
    with pytest.raises(TypeError, match="'when'"):
        converters.parameters_to_proto({"when": object()}, pb.ModelInferResponse().parameters)


# -- raw contents --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "data"),
    [
        ("FP32", np.arange(6, dtype=np.float32).reshape(2, 3) / 7),
        ("FP16", np.arange(6, dtype=np.float16).reshape(3, 2)),
        ("INT64", np.array([[-(2**62), 1, 2**62]], dtype=np.int64)),
        ("UINT8", np.array([0, 7, 255], dtype=np.uint8)),
        ("BOOL", np.array([[True, False]])),
    ],
)
def test_raw_contents_round_trip_exactly(datatype: str, data: np.ndarray) -> None:
    decoded = tensors.from_raw("t", datatype, list(data.shape), tensors.to_raw(datatype, data))
    assert decoded.dtype == data.dtype
    np.testing.assert_array_equal(decoded, data)


def test_raw_bytes_elements_are_length_prefixed() -> None:
    data = np.array([b"ab", b"", "\u00e9".encode()], dtype=np.object_)
    raw = tensors.to_raw("BYTES", data)
    assert raw == b"\x02\x00\x00\x00ab" + b"\x00\x00\x00\x00" + b"\x02\x00\x00\x00\xc3\xa9"
    assert list(tensors.from_raw("t", "BYTES", [3], raw)) == list(data)


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "words"),
    [
        ("FP32", [2, 3], b"\x00" * 20, ["input 't'", "20 bytes", "expected 24"]),
        ("BYTES", [2], b"\x01\x00\x00\x00a", ["input 't'", "1 BYTES elements, expected 2"]),
        ("BYTES", [1], b"\x05\x00\x00\x00ab", ["input 't'", "runs past the end"]),
        ("BYTES", [1], b"\x05\x00", ["input 't'", "4-byte length"]),
        ("FP8", [1], b"\x00", ["input 't'", "unknown datatype 'FP8'"]),
    ],
)
def test_raw_contents_that_do_not_add_up_are_invalid_input_naming_the_tensor(
    datatype: str, shape: list[int], raw: bytes, words: list[str]
) -> None:
    with pytest.raises(InvalidInput) as caught:
        tensors.from_raw("t", datatype, shape, raw)
    for word in words:
        assert word in caught.value.message


# -- typed contents ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "values", "dtype"),
    [
        ("BOOL", [True, False], np.bool_),
        ("INT8", [-128, 127], np.int8),
        ("INT32", [-(2**31), 2**31 - 1], np.int32),
        ("INT64", [-(2**63), 2**63 - 1], np.int64),
        ("UINT16", [0, 65535], np.uint16),
        ("UINT64", [0, 2**64 - 1], np.uint64),
        ("FP32", [0.5, -1.5], np.float32),
        ("FP64", [1e300, -1e-300], np.float64),
        ("BYTES", [b"a", b"bc"], np.object_),
    ],
)
def test_typed_contents_decode_into_the_datatypes_dtype(datatype: str, values: list[object], dtype: type) -> None:
    contents = pb.InferTensorContents()
    getattr(contents, tensors.CONTENTS_FIELD[datatype]).extend(values)
    decoded = tensors.from_contents("t", datatype, [2], contents)
    assert decoded.dtype == np.dtype(dtype)
    assert decoded.tolist() == values


@pytest.mark.parametrize(
    ("datatype", "field", "values", "words"),
    [
        ("FP32", "fp32_contents", [1.0, 2.0, 3.0], ["input 't'", "3 values in fp32_contents, expected 2"]),
        ("FP32", "int64_contents", [1, 2], ["input 't'", "belong in fp32_contents, not in int64_contents"]),
        ("INT8", "int_contents", [1, 300], ["input 't'", "outside the range of INT8"]),
        ("FP16", "fp32_contents", [1.0, 2.0], ["input 't'", "FP16", "raw contents"]),
    ],
)
def test_typed_contents_that_do_not_fit_are_invalid_input_naming_the_tensor(
    datatype: str, field: str, values: list[object], words: list[str]
) -> None:
    contents = pb.InferTensorContents()
    getattr(contents, field).extend(values)
    with pytest.raises(InvalidInput) as caught:
        tensors.from_contents("t", datatype, [2], contents)
    for word in words:
        assert word in caught.value.message


# -- requests and responses ------------------------------------------------------------------------


def _raw_request(*inputs: tuple[str, np.ndarray]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    for name, data in inputs:
        request.inputs.add(name=name, datatype="FP32", shape=data.shape)
        request.raw_input_contents.append(data.tobytes())
    return request


def test_a_bare_request_means_latest_version_and_every_output() -> None:
    request = converters.infer_request_from_proto(_raw_request(("x", np.zeros((1, 2), np.float32))))
    assert (request.model_version, request.id, request.outputs, request.parameters) == (None, None, None, {})


def test_requested_outputs_keep_their_order_and_parameters() -> None:
    message = _raw_request(("x", np.zeros((1, 2), np.float32)))
    message.outputs.add(name="b").parameters["binary_data"].bool_param = True
    message.outputs.add(name="a")
    request = converters.infer_request_from_proto(message)
    assert [(o.name, o.parameters) for o in request.outputs or []] == [("b", {"binary_data": True}), ("a", {})]


def test_raw_contents_must_come_one_per_input() -> None:
    message = _raw_request(("x", np.zeros((1, 2), np.float32)))
    message.inputs.add(name="y", datatype="FP32", shape=[1])
    with pytest.raises(InvalidInput, match="2 input.* but 1 raw_input_contents"):
        converters.infer_request_from_proto(message)


def test_raw_and_typed_contents_cannot_be_mixed() -> None:
    message = _raw_request(("x", np.zeros((1,), np.float32)))
    message.inputs[0].contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInput, match="input 'x' has typed contents"):
        converters.infer_request_from_proto(message)


def test_a_negative_dimension_is_invalid_input() -> None:
    message = pb.ModelInferRequest(model_name="m")
    message.inputs.add(name="x", datatype="FP32", shape=[-1, 2])
    with pytest.raises(InvalidInput, match="input 'x' has a negative dimension"):
        converters.infer_request_from_proto(message)


def test_responses_go_out_as_raw_output_contents() -> None:
    last = np.arange(8, dtype=np.float32).reshape(2, 4)
    response = InferResponse("lstm", "3", None, [Tensor("last", "FP32", last)], parameters={"sequence_end": True})
    message = converters.infer_response_to_proto(response)
    assert (message.model_name, message.model_version, message.id) == ("lstm", "3", "")
    assert [(o.name, o.datatype, list(o.shape), o.HasField("contents")) for o in message.outputs] == [
        ("last", "FP32", [2, 4], False)
    ]
    assert message.raw_output_contents[0] == last.astype("<f4").tobytes()
    assert message.parameters["sequence_end"].bool_param is True


def test_a_stream_error_names_the_failed_request() -> None:
    answer = converters.stream_error_to_proto(pb.ModelInferRequest(model_name="m", id="r9"), "it broke")
    assert (answer.error_message, answer.infer_response.id, answer.infer_response.model_name) == ("it broke", "r9", "m")


def test_model_metadata_keeps_any_size_dimensions() -> None:
    metadata = ModelMetadata("m", ["1", "2"], "onnxruntime_onnx", [TensorMetadata("x", "FP32", [-1, 3])], [])
    message = converters.model_metadata_to_proto(metadata)
    assert (message.name, list(message.versions), list(message.inputs[0].shape)) == ("m", ["1", "2"], [-1, 3])
