"""ONNX Runtime sessions: execution providers, threads, IO binding and warm-up."""

from seqserve.runtime.providers import resolve_providers
from seqserve.runtime.session import OrtModel

__all__ = ["OrtModel", "resolve_providers"]
