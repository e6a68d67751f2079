"""Gathering concurrent requests and sequence steps of one model version into one ONNX Runtime run."""

from seqserve.batching.batcher import Batcher, batchable

__all__ = ["Batcher", "batchable"]
