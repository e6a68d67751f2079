"""One loaded ONNX model: an InferenceSession plus the state inputs its signature declares."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from seqserve.datatypes import to_numpy_dtype
from seqserve.errors import ModelNotReady
from seqserve.runtime.failures import ort_failure
from seqserve.runtime.placement import Placement
from seqserve.runtime.providers import CPU, CUDA, ProviderList
from seqserve.store.signature import Signature

log = logging.getLogger(__name__)


def _shrink_arenas() -> ort.RunOptions:
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


# Run options that shrink the arenas a run grew back to what they held before it.
_SHRINK_ARENAS = _shrink_arenas()


def _without_arena(model_path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    """A CPU session of the model with the server's options, but no memory arena and no profiling."""
    options.enable_cpu_mem_arena = False  # the first session has its copy of the options already
    options.enable_profiling = False
    return ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])


def session_options(intra_op_threads: int, inter_op_threads: int, allow_spinning: bool) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    # Spinning workers burn the cores the event loop and the network need; off unless asked for.
    spin = "1" if allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OrtModel:
    """Runs one model version. Thread-safe: ORT sessions may be run from several threads at once.

    With `first_run` (the warm-up: one run on zeros, so the first client does not pay for ORT's
    lazy setup) the run is profiled and `placement` says where each node ran. A model asked to run
    on CUDA always gets that run, and is refused when ORT did not give it the CUDA EP at all.
    """

    def __init__(
        self,
        model_path: Path,
        signature: Signature,
        providers: ProviderList,
        options: ort.SessionOptions,
        first_run: bool = True,
    ) -> None:
        self.signature = signature
        wants_cuda = providers[0][0] == CUDA
        first_run = first_run or wants_cuda
        if first_run:
            options.enable_profiling = True
            options.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"seqserve-placement-{os.getpid()}")
        self.session = ort.InferenceSession(
            str(model_path),
            sess_options=options,
            providers=[name for name, _ in providers],
            provider_options=[opts for _, opts in providers],
        )
        self.providers = self.session.get_providers()
        self.on_cuda = CUDA in self.providers
        # For long runs on the CPU: the same model without ORT's memory arena (`run`), made on first use.
        self._open_arena_free: Callable[[], ort.InferenceSession] | None = lambda: _without_arena(model_path, options)
        self._arena_free: ort.InferenceSession | None = None
        self._arena_free_lock = threading.Lock()
        self._output_names = [o.name for o in signature.outputs] + [s.output for s in signature.states]
        self.placement: Placement | None = None
        if first_run:
            try:
                self.warm_up()
            finally:
                self.placement = Placement.read_and_remove(self.session.end_profiling())
        if wants_cuda and not self.on_cuda:
            raise ModelNotReady(
                f"{model_path}: ONNX Runtime did not give this model the CUDA execution provider and would run "
                f"it on {', '.join(self.providers)} (its log says why: often CUDA or cuDNN libraries it cannot "
                "find); refused rather than served on the CPU under --device cuda"
            )
        if self.on_cuda and self.placement is not None and self.placement.compute_on(CPU):
            log.warning(
                "%s: ONNX Runtime runs these nodes on the CPU, not CUDA: %s (export with --target cuda for "
                "forms the CUDA EP runs)",
                model_path,
                ", ".join(self.placement.compute_on(CPU)),
            )

    def zero_states(self, batch_size: int) -> dict[str, np.ndarray]:
        """The state inputs of a call that carries no state: zeros, as Keras starts a sequence."""
        return {
            s.input: np.zeros([batch_size, *s.shape[1:]], dtype=to_numpy_dtype(s.datatype))
            for s in self.signature.states
        }

    def run(self, feeds: dict[str, np.ndarray], release_memory: bool = False) -> dict[str, np.ndarray]:
        """Runs the graph; `feeds` must hold every input, states included. Returns outputs and new states.

        `release_memory` (for a long run): ORT's arena keeps what a run grew it by for later runs:
        1.3 GB held for good after one request of 160 x 100,000 timesteps. On the CPU such a run
        goes to a session without the arena, whose memory is freed as it is released (shrinking the
        arena after the run was not enough: the outputs' blocks stay in it). Not yet on CUDA.
        """
        try:
            if self.on_cuda:  # not asked to release: shrinking CUDA's arenas is not yet tried on a GPU
                return self._run_with_binding(feeds)
            session = self._session_without_arena() if release_memory else None
            if session is not None:
                values = session.run(self._output_names, feeds)
            else:
                values = self.session.run(self._output_names, feeds, _SHRINK_ARENAS if release_memory else None)
        except Exception as e:  # ORT raises its own exception types; the client gets one clear error
            raise ort_failure(e) from e
        return dict(zip(self._output_names, values, strict=True))

    def _session_without_arena(self) -> ort.InferenceSession | None:
        """None when it cannot be made (the version's files were removed while it drains): the
        run then takes the arena'd session and shrinks the arena after it."""
        with self._arena_free_lock:  # runs come from several threads
            if self._arena_free is None and self._open_arena_free is not None:
                try:
                    self._arena_free = self._open_arena_free()
                except Exception as e:  # noqa: BLE001 - ORT's own exception types
                    log.warning("long runs keep ORT's memory arena: a second session did not load (%s)", e)
                    self._open_arena_free = None
            return self._arena_free

    def _run_with_binding(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # IO binding lets ORT copy inputs once and allocate outputs where the kernels want them.
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name in self._output_names:
            binding.bind_output(name)
        self.session.run_with_iobinding(binding)
        return dict(zip(self._output_names, binding.copy_outputs_to_cpu(), strict=True))

    def warm_up(self) -> None:
        """One run on zeros (batch 1, free dimensions 1) so the first client does not pay for ORT's lazy setup."""
        feeds = {
            t.name: np.zeros([1 if d < 0 else d for d in t.shape], dtype=to_numpy_dtype(t.datatype))
            for t in self.signature.inputs
        }
        feeds.update(self.zero_states(1))
        self.run(feeds)
