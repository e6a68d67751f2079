"""The REST codec in-process, for datatypes the test models do not have (BYTES, BOOL, FP16, INT8),
checked against tritonclient's own encoders and decoders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tritonclient.http import InferResult
from tritonclient.utils import serialize_byte_tensor

from seqserve.errors import InvalidInput
from seqserve.inference import InferRequest, InferResponse, RequestedOutput, Tensor
from seqserve.rest.binary_extension import HEADER_LENGTH
from seqserve.rest.decode import decode_request, split_body
from seqserve.rest.encode import encode_response

WORDS = np.array([["hello", "wörld"], ["", "x" * 300]], dtype=object)


def decode(inputs: list[dict[str, object]], binary: bytes = b"") -> InferRequest:
    header = json.dumps({"inputs": inputs}).encode()
    length = str(len(header)) if binary else None
    return decode_request(*split_body(header + binary, length), "model", None)


def binary_input(name: str, array: np.ndarray, datatype: str) -> tuple[dict[str, object], bytes]:
    raw = serialize_byte_tensor(array).item() if datatype == "BYTES" else array.tobytes()
    tensor = {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    return tensor, raw


def roundtrip(tensor: Tensor, binary: bool) -> np.ndarray:
    """Encodes one output as the server would and decodes it as tritonclient does."""
    request = InferRequest("model", outputs=[RequestedOutput(tensor.name, {"binary_data": binary})])
    body, headers = encode_response(request, InferResponse("model", "1", None, [tensor]))
    length = headers.get(HEADER_LENGTH)
    assert (length is not None) == binary
    return InferResult.from_response_body(body, header_length=int(length) if length else None).as_numpy(tensor.name)


def test_binary_bytes_input_is_length_prefixed_elements() -> None:
    tensor, raw = binary_input("text", np.vectorize(str.encode, otypes=[object])(WORDS), "BYTES")
    (decoded,) = decode([tensor], raw).inputs
    assert decoded.data.shape == (2, 2)
    assert decoded.data.tolist() == [[b"hello", "wörld".encode()], [b"", b"x" * 300]]


def test_json_bytes_input_takes_nested_strings() -> None:
    (decoded,) = decode([{"name": "text", "shape": [2, 2], "datatype": "BYTES", "data": WORDS.tolist()}]).inputs
    assert decoded.data[0, 1] == "wörld".encode()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_bytes_output_reaches_tritonclient_intact(binary: bool) -> None:
    result = roundtrip(Tensor("text", "BYTES", WORDS), binary)
    expected = WORDS if not binary else np.vectorize(str.encode, otypes=[object])(WORDS)
    assert result.tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("array", "datatype"),
    [
        (np.array([[True, False, True]]), "BOOL"),
        (np.array([[0.5, -2.0, 65504.0]], dtype=np.float16), "FP16"),
        (np.array([[-128, 0, 127]], dtype=np.int8), "INT8"),
        (np.array([[2**64 - 1, 0, 1]], dtype=np.uint64), "UINT64"),
    ],
    ids=["BOOL", "FP16", "INT8", "UINT64"],
)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_datatypes_survive_both_encodings(array: np.ndarray, datatype: str, binary: bool) -> None:
    if binary:
        tensor, raw = binary_input("t", array, datatype)
        (decoded,) = decode([tensor], raw).inputs
    else:
        (decoded,) = decode(
            [{"name": "t", "shape": list(array.shape), "datatype": datatype, "data": array.tolist()}]
        ).inputs
    assert decoded.data.dtype == array.dtype
    np.testing.assert_array_equal(decoded.data, array)
    np.testing.assert_array_equal(roundtrip(Tensor("t", datatype, array), binary), array)


def test_binary_data_after_an_odd_length_header_is_aligned_for_onnx_runtime() -> None:
    array = np.arange(6, dtype=np.float64).reshape(2, 3)
    tensor, raw = binary_input("t", array, "FP64")
    tensor["name"] = "odd"  # any header length: the tail starts wherever the JSON ends
    (decoded,) = decode([tensor], raw).inputs
    assert decoded.data.flags.aligned
    np.testing.assert_array_equal(decoded.data, array)


@pytest.mark.parametrize(
    ("tensor", "binary", "says"),
    [
        ({"name": "t", "shape": [2], "datatype": "INT8", "data": [1, 300]}, b"", "300, outside the range of INT8"),
        ({"name": "t", "shape": [2], "datatype": "BOOL", "data": [1, 0]}, b"", "integers in 'data'"),
        ({"name": "t", "shape": [1], "datatype": "BYTES", "data": [5]}, b"", "element 0 is int, expected a string"),
        (
            {"name": "t", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": 9}},
            b"\x02\x00\x00\x00ab\x09\x00\x00",
            "ends after 1 of 2 elements",
        ),
        (
            {"name": "t", "shape": [10**9], "datatype": "BYTES", "parameters": {"binary_data_size": 4}},
            b"\x00\x00\x00\x00",
            "too few for 1000000000 elements",
        ),
        (
            {"name": "t", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 8}},
            b"\x09\x00\x00\x00abcd",
            "element 0 declares 9 bytes, but only 4 remain",
        ),
        (
            {"name": "t", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 7}},
            b"\x02\x00\x00\x00abc",
            "1 bytes left over",
        ),
        (
            {"name": "t", "shape": [1], "datatype": "FP32", "data": [1.0], "parameters": {"binary_data_size": 4}},
            b"\x00\x00\x80\x3f",
            "both JSON 'data' and 'binary_data_size'",
        ),
    ],
    ids=["int8-range", "bool-from-ints", "bytes-not-string", "bytes-truncated", "bytes-huge-shape",
         "bytes-overlong", "bytes-left-over", "data-and-binary"],
)  # fmt: skip
def test_undecodable_tensors_are_invalid_input_naming_the_tensor(
    tensor: dict[str, object], binary: bytes, says: str
) -> None:
    with pytest.raises(InvalidInput, match="input 't'") as raised:
        decode([tensor], binary)
    assert says in str(raised.value)


def test_non_utf8_bytes_output_must_be_asked_for_as_binary() -> None:
    with pytest.raises(InvalidInput, match="binary_data"):
        roundtrip(Tensor("raw", "BYTES", np.array([b"\xff\xfe"], dtype=object)), binary=False)
    assert roundtrip(Tensor("raw", "BYTES", np.array([b"\xff\xfe"], dtype=object)), binary=True).tolist() == [
        b"\xff\xfe"
    ]
