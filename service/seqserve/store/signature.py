"""The signature written beside every exported ONNX file, and read by the server.

It is the contract between the exporter and the server: which tensors a client sends and gets back,
which graph inputs/outputs carry recurrent state (the server feeds and keeps those; clients never
see them as plain inputs), and where the model came from and how exact its export was.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from seqserve.errors import InvalidInput

SIGNATURE_FILE = "signature.json"
MODEL_FILE = "model.onnx"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TensorSpec:
    """A client-visible tensor. Dimension -1 is free (batch, timesteps)."""

    name: str
    datatype: str
    shape: list[int]

    @cached_property
    def fixed_dims(self) -> tuple[tuple[int, int], ...]:
        """(axis, size) of every dimension that is not free: what a request's shape must match."""
        return tuple((axis, size) for axis, size in enumerate(self.shape) if size >= 0)


@dataclass(frozen=True)
class StateSpec:
    """One recurrent state tensor: graph input `input` is the state before the call, `output` after it.

    `shape` includes the batch dimension (-1). `layer` is the Keras layer it belongs to and `kind`
    its role there (`h`, `c`, or `forward_h`... for Bidirectional).
    """

    name: str
    input: str
    output: str
    datatype: str
    shape: list[int]
    layer: str
    kind: str


@dataclass(frozen=True)
class Signature:
    """Everything the server needs to know about an exported model, beside the ONNX file itself."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    states: list[StateSpec] = field(default_factory=list)
    stateful: bool = False
    target: str = "cpu"
    source: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    # Token-id inputs feeding an Embedding: input name -> its vocabulary size (`input_dim`). ONNX
    # Runtime refuses an id >= size mid-run and takes a negative one from the end of the table, so
    # the server checks 0 <= id < size before a request is batched. Absent from older signatures.
    vocabulary_sizes: dict[str, int] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    # Lookups the server makes on every request, computed once per loaded signature.
    @cached_property
    def inputs_by_name(self) -> dict[str, TensorSpec]:
        return {t.name: t for t in self.inputs}

    @cached_property
    def outputs_by_name(self) -> dict[str, TensorSpec]:
        return {t.name: t for t in self.outputs}

    @cached_property
    def state_names(self) -> frozenset[str]:
        return frozenset(s.name for s in self.states)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"

    def write(self, directory: Path) -> Path:
        path = directory / SIGNATURE_FILE
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Signature:
        if not isinstance(data, dict):
            raise InvalidInput(f"malformed signature: expected an object, got {type(data).__name__}")
        try:
            return cls(
                inputs=[_checked(TensorSpec(**t)) for t in data["inputs"]],
                outputs=[_checked(TensorSpec(**t)) for t in data["outputs"]],
                states=[_checked(StateSpec(**s)) for s in data.get("states", [])],
                stateful=bool(data.get("stateful", False)),
                target=data.get("target", "cpu"),
                source=dict(data.get("source", {})),
                parity=dict(data.get("parity", {})),
                vocabulary_sizes={str(k): int(v) for k, v in dict(data.get("vocabulary_sizes", {})).items()},
                format=int(data.get("format", FORMAT_VERSION)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidInput(f"malformed signature: {e}") from None

    @classmethod
    def read(cls, directory: Path) -> Signature:
        path = directory / SIGNATURE_FILE
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError, RecursionError) as e:  # ValueError: not JSON, or not UTF-8
            raise InvalidInput(f"cannot read {path}: {e}") from None
        try:
            return cls.from_dict(data)
        except InvalidInput as e:
            raise InvalidInput(f"{path}: {e}") from None


def _checked(spec: TensorSpec | StateSpec) -> Any:
    """A spec whose fields have the types the server relies on on every request (a hand-edited or
    damaged file must fail at load, not as a 500 at the first request)."""
    strings = [spec.name, spec.datatype] + ([spec.input, spec.output] if isinstance(spec, StateSpec) else [])
    if not all(isinstance(s, str) for s in strings):
        raise InvalidInput(f"tensor {spec.name!r}: names and datatype must be strings")
    shape = spec.shape
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidInput(f"tensor {spec.name!r}: shape must be a list of integers, not {shape!r}")
    return spec
