"""One loaded ONNX model: an InferenceSession plus the state inputs its signature declares."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from seqserve.datatypes import to_numpy_dtype
from seqserve.errors import InferenceFailed
from seqserve.runtime.providers import CUDA, ProviderList
from seqserve.store.signature import Signature

log = logging.getLogger(__name__)


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
    """Runs one model version. Thread-safe: ORT sessions may be run from several threads at once."""

    def __init__(
        self,
        model_path: Path,
        signature: Signature,
        providers: ProviderList,
        options: ort.SessionOptions,
    ) -> None:
        self.signature = signature
        self.session = ort.InferenceSession(
            str(model_path),
            sess_options=options,
            providers=[name for name, _ in providers],
            provider_options=[opts for _, opts in providers],
        )
        self.providers = self.session.get_providers()
        self.on_cuda = CUDA in self.providers
        self._output_names = [o.name for o in signature.outputs] + [s.output for s in signature.states]

    def zero_states(self, batch_size: int) -> dict[str, np.ndarray]:
        """The state inputs of a call that carries no state: zeros, as Keras starts a sequence."""
        return {
            s.input: np.zeros([batch_size, *s.shape[1:]], dtype=to_numpy_dtype(s.datatype))
            for s in self.signature.states
        }

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs the graph; `feeds` must hold every input, states included. Returns outputs and new states."""
        try:
            if self.on_cuda:
                return self._run_with_binding(feeds)
            values = self.session.run(self._output_names, feeds)
        except Exception as e:  # ORT raises its own exception types; the client gets one clear error
            raise InferenceFailed(f"ONNX Runtime failed: {e}") from e
        return dict(zip(self._output_names, values, strict=True))

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
