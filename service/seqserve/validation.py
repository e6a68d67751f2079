"""Checking a request against a model's signature: names, datatypes, shapes and values.

Everything a client sends is checked here before it reaches ONNX Runtime or a session's state, and
every refusal names the tensor and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqserve.errors import InvalidInput
from seqserve.inference import InferRequest, Tensor
from seqserve.store.signature import Signature, StateSpec, TensorSpec


@dataclass(frozen=True)
class RequestLimits:
    """The server-wide bounds on one request that hold before its model is consulted (`Settings`)."""

    max_inputs: int = 64
    max_sequence_id_length: int = 256

    @classmethod
    def from_settings(cls, settings: Any) -> RequestLimits:
        return cls(settings.max_inputs_per_request, settings.max_sequence_id_length)

    def check_tensor_count(self, count: int, kind: str = "input") -> None:
        """Called with the count a wire message declares, before any of its tensors is decoded."""
        if count > self.max_inputs:
            raise InvalidInput(
                f"the request has {count} {kind}s; at most {self.max_inputs} are accepted per request "
                f"(max_inputs_per_request, SEQSERVE_MAX_INPUTS_PER_REQUEST)"
            )


def check_request_size(model_name: str, signature: Signature, tensors: Sequence[Tensor], limits: Any) -> None:
    """Refuses a request bigger than the model's limits (`max_timesteps_per_request`,
    `max_elements_per_request` of its settings), before it is run or its states are stored.
    Timesteps are the second dimension of an input the signature leaves free there."""
    expected = signature.inputs_by_name
    raise_it = "SEQSERVE_{} or the model's config.yaml"
    for tensor in tensors:
        spec = expected.get(tensor.name)
        if spec is None or len(spec.shape) < 2 or spec.shape[1] >= 0 or tensor.data.ndim < 2:
            continue
        steps = tensor.data.shape[1]
        if steps > limits.max_timesteps_per_request:
            raise InvalidInput(
                f"input '{tensor.name}' has {steps} timesteps; model '{model_name}' accepts at most "
                f"{limits.max_timesteps_per_request} per request (max_timesteps_per_request: "
                f"{raise_it.format('MAX_TIMESTEPS_PER_REQUEST')}); send a longer sequence in chunks"
            )
    elements = sum(int(tensor.data.size) for tensor in tensors)
    if elements > limits.max_elements_per_request:
        raise InvalidInput(
            f"the request's tensors hold {elements} elements; model '{model_name}' accepts at most "
            f"{limits.max_elements_per_request} per request (max_elements_per_request: "
            f"{raise_it.format('MAX_ELEMENTS_PER_REQUEST')})"
        )


def split_state_inputs(
    signature: Signature, inputs: list[Tensor], allowed: bool
) -> tuple[list[Tensor], dict[str, Tensor]]:
    """Separates tensors named like a state (`lstm.h`) from model inputs: they seed a sequence's start."""
    state_names = signature.state_names
    if not any(tensor.name in state_names for tensor in inputs):
        return inputs, {}
    model_inputs, initial = [], {}
    for tensor in inputs:
        if tensor.name in state_names:
            if not allowed:
                raise InvalidInput(
                    f"state '{tensor.name}' can only be given with sequence_start=true (or through the session API)"
                )
            initial[tensor.name] = tensor
        else:
            model_inputs.append(tensor)
    return model_inputs, initial


def validate_states(signature: Signature, given: dict[str, Tensor], batch_size: int) -> dict[str, np.ndarray]:
    """Checks client-supplied states against the signature; returns them keyed by graph input."""
    feeds = {}
    for spec in signature.states:
        tensor = given.get(spec.name)
        if tensor is None:
            continue
        expected = [batch_size, *spec.shape[1:]]
        _check_state(spec, tensor, expected)
        feeds[spec.input] = tensor.data
    return feeds


def _check_state(spec: StateSpec, tensor: Tensor, expected: list[int]) -> None:
    if tensor.datatype != spec.datatype:
        raise InvalidInput(f"state '{spec.name}' has datatype {tensor.datatype}, expected {spec.datatype}")
    if list(tensor.data.shape) != expected:
        raise InvalidInput(f"state '{spec.name}' has shape {list(tensor.data.shape)}, expected {expected}")
    if not np.isfinite(tensor.data).all():
        raise InvalidInput(f"state '{spec.name}' holds a NaN or infinite value")


def validate_inputs(signature: Signature, model_name: str, inputs: list[Tensor]) -> tuple[dict[str, np.ndarray], int]:
    """Checks names, datatypes, shapes and values against the signature; returns ORT feeds and the batch size."""
    expected = signature.inputs_by_name
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

    feeds = {}
    vocabulary_sizes = signature.vocabulary_sizes
    for name, spec in expected.items():
        tensor = given[name]
        _check_tensor(spec, tensor)
        if name in vocabulary_sizes:
            _check_token_ids(name, tensor.data, vocabulary_sizes[name])
        feeds[name] = tensor.data
    batch_sizes = {data.shape[0] for data in feeds.values()}
    if len(batch_sizes) > 1:
        raise InvalidInput(f"inputs disagree on the batch size: {sorted(batch_sizes)}")
    return feeds, batch_sizes.pop()


def _check_tensor(spec: TensorSpec, tensor: Tensor) -> None:
    if tensor.datatype != spec.datatype:
        raise InvalidInput(f"input '{spec.name}' has datatype {tensor.datatype}, expected {spec.datatype}")
    shape = tensor.data.shape
    if len(shape) != len(spec.shape) or any(shape[axis] != size for axis, size in spec.fixed_dims):
        raise InvalidInput(f"input '{spec.name}' has shape {list(shape)}, expected {_shape_text(spec.shape)}")
    if 0 in shape:
        raise InvalidInput(f"input '{spec.name}' has an empty dimension: shape {list(shape)}")
    # A NaN fed into a recurrent state poisons every later step of a session: refuse it at the door.
    if tensor.data.dtype.kind == "f" and not np.isfinite(tensor.data).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(tensor.data))[0])
        raise InvalidInput(f"input '{spec.name}' holds a NaN or infinite value at index {list(index)}")


def _check_token_ids(name: str, data: np.ndarray, vocabulary_size: int) -> None:
    """Ids an Embedding cannot look up: ONNX Runtime would fail the whole batch on one, or silently
    take a negative one from the end of the table."""
    outside = (data < 0) | (data >= vocabulary_size)
    if outside.any():
        index = tuple(int(i) for i in np.argwhere(outside)[0])
        raise InvalidInput(
            f"input '{name}' holds token id {data[index]} at index {list(index)}, outside the model's vocabulary: "
            f"ids must be 0 to {vocabulary_size - 1}"
        )


def select_outputs(signature: Signature, model_name: str, request: InferRequest) -> list[TensorSpec]:
    if request.outputs is None:
        return list(signature.outputs)
    known = signature.outputs_by_name
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


def require_stateful(signature: Signature, model_name: str) -> None:
    """Sequences need state inputs and outputs in the graph: only models exported stateful have them."""
    if not signature.stateful:
        raise InvalidInput(
            f"model '{model_name}' was exported without state, so it cannot carry a sequence; "
            "export it with `seqserve export --stateful`"
        )
