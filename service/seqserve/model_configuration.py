"""Triton's model configuration extension: a model version's config in Triton's JSON shape.

Built from what the server really does with the version: its signature and the settings its
runner runs with (config.yaml over the server's settings), never from a template. The gRPC
`ModelConfig` parses this same dict into its message, so the two protocols cannot disagree.

How seqserve maps onto Triton's fields:
- `max_batch_size`: when every input, output and state has a free first dimension, that dimension
  is the batch: `max_batch_size` is the most samples the batcher stacks into one run (the model's
  `max_batch_size` setting, also when batching is off), and `dims` leave the batch out, as Triton's
  do. A request with more samples is not refused: it runs alone. A stateful model is the same: a
  sequence's batch is fixed by its first request, and each of its steps is one request of that
  batch (perf_analyzer's `-b`). Otherwise 0, and `dims` are the whole shape.
- `dims`: -1 for a free dimension (timesteps, usually).
- `sequence_batching` for a stateful model: the idle timeout, the `oldest` strategy with the
  sequence batch delay when it batches, and its recurrent states as Triton's implicit `state`.
  There is no `max_candidate_sequences`: seqserve has no bound on sequences batched together.
- `dynamic_batching` for a stateless model that batches, with its queue delay.
- `instance_group`: one ONNX Runtime session, on the GPU (KIND_GPU) or the CPU (KIND_CPU).
- `parameters`: every setting the version runs with, in seqserve's own units and names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from seqserve.batching.batcher import batchable
from seqserve.catalog import PLATFORM
from seqserve.runner import ModelRunner
from seqserve.store.model_store import ModelStore
from seqserve.store.signature import TensorSpec

BACKEND = "onnxruntime"
_CUDA = "CUDAExecutionProvider"


def model_config(store: ModelStore, name: str, version: str = "") -> dict[str, Any]:
    """The config of a model's version (the highest ready one when `version` is empty).

    An unknown model or version is ModelNotFound; one that cannot serve is ModelNotReady."""
    entry = store.get_ready(name, version or None)
    return triton_config(entry.name, entry.runner)


def triton_config(name: str, runner: ModelRunner) -> dict[str, Any]:
    signature, settings = runner.signature, runner.settings
    batched = batchable(signature)

    def dims(shape: list[int]) -> list[int]:
        return list(shape[1:] if batched else shape)

    config: dict[str, Any] = {
        "name": name,
        "platform": PLATFORM,
        "backend": BACKEND,
        "max_batch_size": settings.max_batch_size if batched else 0,
        "input": [_tensor(t, dims) for t in signature.inputs],
        "output": [_tensor(t, dims) for t in signature.outputs],
    }
    batches = runner.batcher is not None
    if signature.stateful:
        sequence: dict[str, Any] = {"max_sequence_idle_microseconds": _microseconds(settings.max_sequence_idle)}
        if batches:
            sequence["oldest"] = {"max_queue_delay_microseconds": _microseconds(settings.sequence_batch_delay)}
        sequence["state"] = [
            {"input_name": s.input, "output_name": s.output, "data_type": _data_type(s.datatype), "dims": dims(s.shape)}
            for s in signature.states
        ]
        config["sequence_batching"] = sequence
    elif batches:
        config["dynamic_batching"] = {"max_queue_delay_microseconds": _microseconds(settings.max_queue_delay)}
    config["instance_group"] = [_instance_group(runner)]
    ours = {"stateful": signature.stateful, **settings.model_dump()}
    config["parameters"] = {key: {"string_value": _text(value)} for key, value in ours.items() if value is not None}
    return config


def _tensor(spec: TensorSpec, dims: Callable[[list[int]], list[int]]) -> dict[str, Any]:
    return {"name": spec.name, "data_type": _data_type(spec.datatype), "dims": dims(spec.shape)}


def _instance_group(runner: ModelRunner) -> dict[str, Any]:
    if not runner.model.on_cuda:
        return {"kind": "KIND_CPU", "count": 1}
    device = runner.model.session.get_provider_options().get(_CUDA, {}).get("device_id", "0")
    return {"kind": "KIND_GPU", "count": 1, "gpus": [int(device)]}


def _data_type(datatype: str) -> str:
    """A V2 datatype name as Triton's config names it: FP32 -> TYPE_FP32, BYTES -> TYPE_STRING."""
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _microseconds(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)
