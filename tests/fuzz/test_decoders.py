"""Property tests of everything that turns client bytes into tensors: the V2 JSON decoder, the binary
tensor extension, the raw tensor layout and the protobuf converters. Each input ends in a decoded
request or an InvalidInput; any other exception is a finding (it would be a 500 or INTERNAL)."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.fuzzing import FUZZ, examples
from seqserve import raw_tensors
from seqserve.datatypes import V2_DATATYPES, to_numpy_dtype
from seqserve.errors import InvalidInput
from seqserve.grpc import converters, tensors
from seqserve.grpc.generated import grpc_service_pb2 as pb
from seqserve.inference import InferRequest
from seqserve.rest.decode import decode_request, split_body
from seqserve.shapes import MAX_DIMENSIONS

DATATYPES = st.sampled_from([*V2_DATATYPES, "FP8", "fp32", "", "BF16"])
# Mostly small, sometimes absurd: zero, negative, 2**62, past int64.
DIMENSION = st.one_of(st.integers(0, 4), st.integers(-2, 2**64 + 1), st.sampled_from([2**31, 2**32, 2**62, 2**63 - 1]))
SHAPES = st.one_of(st.lists(st.integers(0, 3), max_size=4), st.lists(DIMENSION, max_size=MAX_DIMENSIONS + 3))
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=30,
)
PARAMETER_MAPS = st.dictionaries(
    st.sampled_from(["binary_data_size", "binary_data", "binary_data_output", "sequence_id", "x"]),
    JSON_SCALARS,
    max_size=3,
)


def _decoded_or_refused(call, *args) -> object:
    try:
        return call(*args)
    except InvalidInput as e:
        assert e.message
        return None


def _check_request(request: object) -> None:
    if request is None:
        return
    assert isinstance(request, InferRequest)
    for tensor in request.inputs:
        assert isinstance(tensor.data, np.ndarray)
        assert tensor.data.ndim <= MAX_DIMENSIONS


# -- REST: JSON and the binary tensor extension ---------------------------------------------------


@st.composite
def v2_bodies(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """Bodies shaped like V2 requests, wrong in the details: any field may be off, data may be binary."""
    inputs = []
    blobs = []
    for _ in range(draw(st.integers(0, 3))):
        item: dict[str, object] = {
            "name": draw(st.text(max_size=5)),
            "shape": draw(SHAPES),
            "datatype": draw(DATATYPES),
        }
        if draw(st.booleans()):
            item["data"] = draw(st.one_of(JSON_VALUES, st.lists(JSON_SCALARS, max_size=12)))
        if draw(st.booleans()):
            blob = draw(st.binary(max_size=40))
            blobs.append(blob)
            declared = draw(st.one_of(st.just(len(blob)), JSON_SCALARS))
            item["parameters"] = {"binary_data_size": declared}
        elif draw(st.booleans()):
            item["parameters"] = draw(PARAMETER_MAPS)
        if draw(st.integers(0, 9)) == 0:  # now and then a field of the wrong kind
            item[draw(st.sampled_from(["name", "shape", "datatype", "parameters"]))] = draw(JSON_VALUES)
        inputs.append(item)
    body: dict[str, object] = {"inputs": inputs}
    if draw(st.booleans()):
        body["outputs"] = [{"name": draw(st.text(max_size=4)), "parameters": draw(PARAMETER_MAPS)}]
    if draw(st.booleans()):
        body["parameters"] = draw(PARAMETER_MAPS)
    if draw(st.booleans()):
        body["id"] = draw(JSON_SCALARS)
    head = json.dumps(body).encode()
    tail = b"".join(blobs)
    header: str | None = str(len(head)) if tail or draw(st.booleans()) else None
    if draw(st.integers(0, 9)) == 0:
        header = draw(st.sampled_from(["0", "-1", "x", str(len(head) + len(tail) + 1), str(len(head) - 1), " 1"]))
    return head + tail, header


def _decode_body(body: bytes, header: str | None) -> InferRequest:
    head, binary = split_body(body, header)
    return decode_request(head, binary, "m", None)


@given(v2_bodies())
@settings(FUZZ, max_examples=examples(400))
def test_v2_shaped_bodies_decode_or_are_refused(case: tuple[bytes, str | None]) -> None:
    _check_request(_decoded_or_refused(_decode_body, *case))


@given(st.one_of(st.binary(max_size=200), JSON_VALUES.map(lambda v: json.dumps(v).encode())), st.none() | st.text())
@settings(FUZZ, max_examples=examples(300))
def test_any_bytes_decode_or_are_refused(body: bytes, header: str | None) -> None:
    _check_request(_decoded_or_refused(_decode_body, body, header))


@given(st.data())
@settings(FUZZ, max_examples=examples(200))
def test_json_and_binary_carry_the_same_tensor(data: st.DataObject) -> None:
    datatype = data.draw(st.sampled_from([d for d in V2_DATATYPES if d not in ("FP16", "BYTES")]))
    dtype = to_numpy_dtype(datatype)
    shape = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    if dtype.kind == "b":
        elements = st.booleans()
    elif dtype.kind == "f":
        elements = st.floats(width=dtype.itemsize * 8, allow_nan=False, allow_infinity=False)
    else:
        info = np.iinfo(dtype)
        elements = st.integers(int(info.min), int(info.max))
    values = data.draw(st.lists(elements, min_size=math.prod(shape), max_size=math.prod(shape)))
    as_json = json.dumps({"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "data": values}]}).encode()
    blob = np.array(values, dtype=dtype).astype(dtype.newbyteorder("<")).tobytes()
    head = json.dumps(
        {"inputs": [{"name": "x", "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": len(blob)}}]}
    ).encode()
    from_json = _decode_body(as_json, None).inputs[0].data
    from_binary = _decode_body(head + blob, str(len(head))).inputs[0].data
    assert from_json.dtype == from_binary.dtype == dtype
    np.testing.assert_array_equal(from_json, from_binary)
    np.testing.assert_array_equal(from_json.reshape(-1), np.array(values, dtype=dtype))


# -- the raw tensor layout (binary extension and gRPC raw contents) -------------------------------


@given(DATATYPES, st.lists(st.integers(0, 5), max_size=4), st.binary(max_size=64))
@settings(FUZZ, max_examples=examples(400))
def test_raw_bytes_decode_to_the_declared_shape_or_are_refused(datatype: str, shape: list[int], raw: bytes) -> None:
    array = _decoded_or_refused(raw_tensors.decode, "x", datatype, shape, raw, "binary data")
    if array is not None:
        assert list(array.shape) == shape


@given(st.lists(st.binary(max_size=6), max_size=6), st.binary(max_size=6))
@settings(FUZZ, max_examples=examples(200))
def test_bytes_elements_round_trip_and_trailing_garbage_is_refused(elements: list[bytes], junk: bytes) -> None:
    raw = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    array = raw_tensors.decode("x", "BYTES", [len(elements)], raw, "binary data")
    assert list(array) == elements
    assert raw_tensors.encode("BYTES", array) == raw
    if junk:
        assert _decoded_or_refused(raw_tensors.decode, "x", "BYTES", [len(elements)], raw + junk, "binary data") is None


# -- gRPC: the protobuf converters --------------------------------------------------------------

CONTENT_FIELDS = sorted(set(tensors.CONTENTS_FIELD.values()))
FIELD_VALUES = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=5),
}
GRPC_DIMENSION = st.one_of(st.integers(0, 4), st.integers(-(2**63), 2**63 - 1), st.sampled_from([2**32, 2**62]))


@st.composite
def infer_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m", id=draw(st.text(max_size=4)))
    use_raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        shape = draw(st.one_of(st.lists(st.integers(0, 3), max_size=3), st.lists(GRPC_DIMENSION, max_size=70)))
        tensor = request.inputs.add(name=draw(st.text(max_size=4)), datatype=draw(DATATYPES), shape=shape)
        if use_raw:
            request.raw_input_contents.append(draw(st.binary(max_size=48)))
        for field in draw(st.lists(st.sampled_from(CONTENT_FIELDS), max_size=2)):
            getattr(tensor.contents, field).extend(draw(st.lists(FIELD_VALUES[field], max_size=8)))
        for key in draw(st.lists(st.text(max_size=3), max_size=2)):
            _fill_parameter(draw, tensor.parameters[key])
    if use_raw and draw(st.integers(0, 4)) == 0:
        request.raw_input_contents.append(b"extra")
    for key in draw(st.lists(st.sampled_from(["sequence_id", "sequence_start", "x"]), max_size=2)):
        _fill_parameter(draw, request.parameters[key])
    for _ in range(draw(st.integers(0, 2))):
        output = request.outputs.add(name=draw(st.text(max_size=3)))
        if draw(st.booleans()):
            _fill_parameter(draw, output.parameters["binary_data"])
    return request


def _fill_parameter(draw: st.DrawFn, parameter: pb.InferParameter) -> None:
    choice = draw(st.sampled_from(["bool", "int64", "string", "double", "uint64", "none"]))
    if choice == "bool":
        parameter.bool_param = draw(st.booleans())
    elif choice == "int64":
        parameter.int64_param = draw(st.integers(-(2**63), 2**63 - 1))
    elif choice == "string":
        parameter.string_param = draw(st.text(max_size=4))
    elif choice == "double":
        parameter.double_param = draw(st.floats())
    elif choice == "uint64":
        parameter.uint64_param = draw(st.integers(0, 2**64 - 1))


@given(infer_requests())
@settings(FUZZ, max_examples=examples(400))
def test_grpc_requests_decode_or_are_refused(request: pb.ModelInferRequest) -> None:
    decoded = _decoded_or_refused(converters.infer_request_from_proto, request)
    _check_request(decoded)
    if decoded is not None:
        for given_tensor, tensor in zip(request.inputs, decoded.inputs, strict=True):
            assert list(tensor.data.shape) == list(given_tensor.shape)


@given(infer_requests())
@settings(FUZZ, max_examples=examples(150))
def test_grpc_session_states_decode_or_are_refused(request: pb.ModelInferRequest) -> None:
    states = _decoded_or_refused(converters.session_states_from_proto, request.inputs, request.raw_input_contents)
    assert states is None or len(states) == len(request.inputs)


@given(st.sampled_from([d for d in V2_DATATYPES if d != "FP16"]), st.data())
@settings(FUZZ, max_examples=examples(150))
def test_typed_contents_and_raw_contents_carry_the_same_tensor(datatype: str, data: st.DataObject) -> None:
    field = tensors.CONTENTS_FIELD[datatype]
    dtype = to_numpy_dtype(datatype)
    count = data.draw(st.integers(0, 6))
    if datatype == "BYTES":
        values = data.draw(st.lists(st.binary(max_size=4), min_size=count, max_size=count))
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = data.draw(st.lists(st.integers(int(info.min), int(info.max)), min_size=count, max_size=count))
    else:
        values = data.draw(st.lists(FIELD_VALUES[field], min_size=count, max_size=count))
    contents = pb.InferTensorContents()
    getattr(contents, field).extend(values)
    typed = tensors.from_contents("x", datatype, [count], contents)
    raw = tensors.from_raw("x", datatype, [count], tensors.to_raw(datatype, typed))
    assert typed.dtype == raw.dtype and typed.shape == raw.shape == (count,)
    np.testing.assert_array_equal(typed, raw)


@given(st.binary(max_size=300))
@settings(FUZZ, max_examples=examples(300))
def test_garbage_messages_never_reach_the_converters_as_anything_but_invalid_input(blob: bytes) -> None:
    # grpcio parses the message before the servicer sees it; whatever protobuf accepts must convert cleanly.
    try:
        request = pb.ModelInferRequest.FromString(blob)
    except Exception:  # a DecodeError: grpcio answers it itself, before seqserve
        return
    _check_request(_decoded_or_refused(converters.infer_request_from_proto, request))
