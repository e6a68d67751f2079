"""ONNX Runtime's exceptions become the error table's: an input it refuses is 400, never a raw 500."""

from __future__ import annotations

from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

from seqserve.errors import InferenceFailed, InvalidInput, PayloadTooLarge
from seqserve.runtime.failures import ort_failure

GATHER = (
    "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Non-zero status code returned while running Gather node. "
    "Name:'embedding_node' Status Message: /onnxruntime_src/onnxruntime/core/providers/cpu/tensor/gather.cc:145 "
    "onnxruntime::Status GatherCopyData indices element out of data bounds, idx=15 must be within the "
    "inclusive range [-12,11]"
)


def test_an_input_onnx_runtime_refuses_is_invalid_input_naming_the_node_without_its_sources() -> None:
    error = ort_failure(ort_state.InvalidArgument(GATHER))
    assert isinstance(error, InvalidInput)
    assert str(error) == (
        "the model refused this request's inputs: node Gather 'embedding_node': GatherCopyData indices element "
        "out of data bounds, idx=15 must be within the inclusive range [-12,11]"
    )
    assert "[ONNXRuntimeError]" not in str(error) and "idx=15" in str(error)


def test_a_run_without_memory_is_payload_too_large() -> None:
    text = "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for requested buffer of size 9"
    assert isinstance(ort_failure(ort_state.RuntimeException(text)), PayloadTooLarge)


def test_anything_else_is_an_internal_failure_with_a_clean_message() -> None:
    error = ort_failure(ort_state.Fail("[ONNXRuntimeError] : 1 : FAIL : something broke inside"))
    assert isinstance(error, InferenceFailed) and str(error) == "ONNX Runtime failed: something broke inside"
