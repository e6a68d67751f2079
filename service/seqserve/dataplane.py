"""The data plane: the one code path behind every protocol.

REST and gRPC decode a request into `seqserve.inference` records, call this, and encode what it
returns. Validation against the model's signature, zero-state feeding, output selection and the
metrics happen here, once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from seqserve import __version__
from seqserve.errors import InvalidInput, SeqserveError
from seqserve.inference import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    Tensor,
    TensorMetadata,
)
from seqserve.metrics import Metrics
from seqserve.runtime.session import OrtModel
from seqserve.store.model_store import ModelStore, ModelVersion
from seqserve.store.signature import Signature, TensorSpec

log = logging.getLogger(__name__)

SERVER_NAME = "seqserve"
EXTENSIONS = ["binary_tensor_data"]
PLATFORM = "onnxruntime_onnx"
# Triton's sequence parameters: served by the session manager, not by plain inference.
SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")


class DataPlane:
    def __init__(self, store: ModelStore, metrics: Metrics | None = None, compute_threads: int = 0) -> None:
        self.store = store
        self.metrics = metrics or Metrics()
        self._executor = ThreadPoolExecutor(
            max_workers=compute_threads or max(2, os.cpu_count() or 1), thread_name_prefix="seqserve-compute"
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # -- health and metadata -------------------------------------------------------------------

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready when every model in the store has at least one ready version."""
        return all(any(mv.ready for mv in self.store.versions(name)) for name in self.store.names())

    def server_metadata(self) -> dict[str, object]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self.store.find(name, version).ready

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        mv = self.store.get_ready(name, version)
        signature = mv.signature
        assert signature is not None
        versions = [str(mv.version)] if version else [str(v.version) for v in self.store.versions(name)]
        return ModelMetadata(
            name=name,
            versions=versions,
            platform=PLATFORM,
            inputs=[TensorMetadata(t.name, t.datatype, list(t.shape)) for t in signature.inputs],
            outputs=[TensorMetadata(t.name, t.datatype, list(t.shape)) for t in signature.outputs],
        )

    # -- inference -----------------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        mv = self.store.get_ready(request.model_name, request.model_version)
        labels = (mv.name, str(mv.version))
        self.metrics.requests.labels(*labels).inc()
        started = time.perf_counter()
        try:
            response = await self._infer(mv, request)
        except SeqserveError as e:
            self.metrics.failures.labels(*labels, type(e).__name__).inc()
            log.info("request %s to %s/%d failed: %s", request.id or "-", mv.name, mv.version, e)
            raise
        self.metrics.request_seconds.labels(*labels).observe(time.perf_counter() - started)
        return response

    async def _infer(self, mv: ModelVersion, request: InferRequest) -> InferResponse:
        signature, model = mv.signature, mv.model
        assert signature is not None and isinstance(model, OrtModel)
        for key in SEQUENCE_PARAMETERS:
            if key in request.parameters:
                raise InvalidInput(f"parameter '{key}': sequences are not served yet by this version of seqserve")
        feeds, batch_size = validate_inputs(signature, mv.name, request.inputs)
        wanted = select_outputs(signature, mv.name, request)
        feeds.update(model.zero_states(batch_size))

        labels = (mv.name, str(mv.version))
        submitted = time.perf_counter()

        def run() -> dict[str, np.ndarray]:
            began = time.perf_counter()
            self.metrics.queue_seconds.labels(*labels).observe(began - submitted)
            result = model.run(feeds)
            self.metrics.compute_seconds.labels(*labels).observe(time.perf_counter() - began)
            return result

        results = await asyncio.get_running_loop().run_in_executor(self._executor, run)
        outputs = [Tensor(spec.name, spec.datatype, results[spec.name]) for spec in wanted]
        return InferResponse(
            model_name=mv.name, model_version=str(mv.version), id=request.id, outputs=outputs
        )


def validate_inputs(
    signature: Signature, model_name: str, inputs: list[Tensor]
) -> tuple[dict[str, np.ndarray], int]:
    """Checks names, datatypes, shapes and values against the signature; returns ORT feeds and the batch size."""
    expected = {t.name: t for t in signature.inputs}
    given: dict[str, Tensor] = {}
    for tensor in inputs:
        if tensor.name not in expected:
            raise InvalidInput(
                f"unknown input '{tensor.name}' for model '{model_name}'; expected {_names(signature.inputs)}"
            )
        if tensor.name in given:
            raise InvalidInput(f"input '{tensor.name}' is given more than once")
        given[tensor.name] = tensor
    missing = [name for name in expected if name not in given]
    if missing:
        raise InvalidInput(f"model '{model_name}' expects input(s) {', '.join(map(repr, missing))}, not given")

    batch_sizes = set()
    for name, spec in expected.items():
        tensor = given[name]
        _check_tensor(spec, tensor)
        batch_sizes.add(tensor.data.shape[0])
    if len(batch_sizes) > 1:
        raise InvalidInput(f"inputs disagree on the batch size: {sorted(batch_sizes)}")
    return {name: given[name].data for name in expected}, batch_sizes.pop()


def _check_tensor(spec: TensorSpec, tensor: Tensor) -> None:
    if tensor.datatype != spec.datatype:
        raise InvalidInput(f"input '{spec.name}' has datatype {tensor.datatype}, expected {spec.datatype}")
    shape = tensor.data.shape
    if len(shape) != len(spec.shape) or any(e >= 0 and e != g for e, g in zip(spec.shape, shape, strict=True)):
        raise InvalidInput(f"input '{spec.name}' has shape {list(shape)}, expected {_shape_text(spec.shape)}")
    if shape[0] == 0 or any(d == 0 for d in shape):
        raise InvalidInput(f"input '{spec.name}' has an empty dimension: shape {list(shape)}")
    # A NaN fed into a recurrent state poisons every later step of a session: refuse it at the door.
    if tensor.data.dtype.kind == "f" and not np.isfinite(tensor.data).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(tensor.data))[0])
        raise InvalidInput(f"input '{spec.name}' holds a NaN or infinite value at index {list(index)}")


def select_outputs(signature: Signature, model_name: str, request: InferRequest) -> list[TensorSpec]:
    if request.outputs is None:
        return list(signature.outputs)
    known = {t.name: t for t in signature.outputs}
    wanted = []
    for out in request.outputs:
        if out.name not in known:
            raise InvalidInput(
                f"unknown output '{out.name}' for model '{model_name}'; expected {_names(signature.outputs)}"
            )
        wanted.append(known[out.name])
    return wanted


def _names(specs: list[TensorSpec]) -> str:
    return ", ".join(repr(t.name) for t in specs)


def _shape_text(shape: list[int]) -> str:
    return "[" + ", ".join("-1 (any)" if d < 0 else str(d) for d in shape) + "]"
