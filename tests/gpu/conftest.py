"""GPU tests run only where onnxruntime-gpu offers the CUDA execution provider (`make gpu-check` on a
device machine); elsewhere they are skipped. Offered but not working is a failure, not a skip: the
tests check where ONNX Runtime really placed the nodes."""

import onnxruntime as ort
import pytest

from seqserve.runtime.providers import CUDA


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/gpu/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.gpu)
            if CUDA not in ort.get_available_providers():
                item.add_marker(pytest.mark.skip(reason="needs the CUDA execution provider (onnxruntime-gpu)"))
