"""Choosing ONNX Runtime execution providers for a `--device` setting."""

from __future__ import annotations

import logging
from typing import Any

import onnxruntime as ort

from seqserve.errors import ModelNotReady

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

ProviderList = list[tuple[str, dict[str, Any]]]


def cuda_available() -> bool:
    return CUDA in ort.get_available_providers()


def resolve_providers(device: str, cuda_tf32: bool = False) -> ProviderList:
    """Providers in priority order. CPU is always last so ORT can place what CUDA cannot run."""
    if device == "cpu" or (device == "auto" and not cuda_available()):
        return [(CPU, {})]
    if not cuda_available():
        raise ModelNotReady(
            "device 'cuda' was asked for but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu or use --device cpu"
        )
    _preload_cuda_libraries()
    # TF32 changes LSTM results by ~1e-3; exactness to Keras is the default.
    return [(CUDA, {"use_tf32": "1" if cuda_tf32 else "0"}), (CPU, {})]


def _preload_cuda_libraries() -> None:
    """Loads the CUDA and cuDNN libraries onnxruntime-gpu was built against, found in the environment
    (pip's nvidia-* packages included), before the first CUDA session: without it the EP may fail to
    find cuDNN on images that do not put it on the loader path (seen on a CUDA 13 image)."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is None:
        return
    try:
        preload()
    except Exception as e:  # the CUDA session itself will then say what is missing
        log.warning("onnxruntime.preload_dlls() failed: %s", e)
