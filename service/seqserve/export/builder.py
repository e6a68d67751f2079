"""A small ONNX graph builder shared by every layer converter: unique names, initializers,
nodes, subgraphs (Scan bodies) and model-local functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
# Our own domain, for model-local functions (ConvLSTM cells...).
LOCAL_DOMAIN = "seqserve"


class NameScope:
    """Hands out tensor/node names that are unique within one graph (and its reserved names)."""

    def __init__(self, reserved: Sequence[str] = ()) -> None:
        self._used: set[str] = set(reserved)

    def reserve(self, name: str) -> None:
        self._used.add(name)

    def unique(self, base: str) -> str:
        base = base or "t"
        if base not in self._used:
            self._used.add(base)
            return base
        i = 1
        while f"{base}_{i}" in self._used:
            i += 1
        name = f"{base}_{i}"
        self._used.add(name)
        return name


class GraphBuilder:
    """Accumulates one ONNX graph. `op()` adds a node and returns its output name(s).

    Subgraphs (Scan/Loop bodies) are built with `sub()`: a child builder sharing the name scope, so
    names never clash with the outer graph (ONNX requires that for outer-scope references).
    """

    def __init__(self, scope: NameScope | None = None, *, is_main: bool = True) -> None:
        self.scope = scope or NameScope()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.functions: dict[tuple[str, str], onnx.FunctionProto] = {}
        self.is_main = is_main
        self._consts: dict[tuple[bytes, str, tuple[int, ...]], str] = {}
        self.root: GraphBuilder = self

    # names -----------------------------------------------------------------------------------
    def name(self, base: str) -> str:
        return self.scope.unique(base)

    # constants -------------------------------------------------------------------------------
    def const(self, value: Any, base: str = "const", dtype: Any = np.float32) -> str:
        """An initializer (main graph) or Constant node (subgraph), deduplicated by value."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.tobytes(), arr.dtype.str, arr.shape)
        if key in self._consts:
            return self._consts[key]
        name = self.name(base)
        tensor = numpy_helper.from_array(arr, name)
        if self.is_main:
            self.initializers.append(tensor)
        else:
            self.nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        self._consts[key] = name
        return name

    def i64(self, values: Sequence[int] | int, base: str = "ints") -> str:
        return self.const(values, base, np.int64)

    # nodes -----------------------------------------------------------------------------------
    def op(
        self,
        op_type: str,
        inputs: Sequence[str],
        base: str | None = None,
        n_out: int = 1,
        domain: str = "",
        **attrs: Any,
    ) -> Any:
        """Add a node; returns its output name, or a list of names when n_out > 1."""
        base = base or op_type.lower()
        outs = [self.name(base if n_out == 1 else f"{base}_out{i}") for i in range(n_out)]
        self.nodes.append(
            helper.make_node(op_type, list(inputs), outs, name=self.name(f"{base}_node"), domain=domain, **attrs)
        )
        return outs[0] if n_out == 1 else outs

    def op_into(self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], **attrs: Any) -> None:
        """Add a node whose output names are given (graph outputs, Scan body outputs)."""
        self.nodes.append(
            helper.make_node(op_type, list(inputs), list(outputs), name=self.name(f"{op_type.lower()}_node"), **attrs)
        )

    # graph io --------------------------------------------------------------------------------
    def add_input(self, name: str, elem_type: int, shape: Sequence[int | str | None]) -> str:
        self.scope.reserve(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def add_output(self, name: str, elem_type: int, shape: Sequence[int | str | None] | None) -> str:
        self.scope.reserve(name)
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape)))
        return name

    def sub(self) -> GraphBuilder:
        child = GraphBuilder(self.scope, is_main=False)
        child.root = self.root
        return child

    def graph(self, name: str) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)

    def add_function(self, function: onnx.FunctionProto) -> None:
        """Register a model-local function (call it with `op(function.name, ..., domain=...)`)."""
        self.root.functions[(function.domain, function.name)] = function

    def model(self, graph_name: str, doc: str = "") -> onnx.ModelProto:
        opsets = [helper.make_opsetid("", OPSET)]
        if self.functions:
            opsets.append(helper.make_opsetid(LOCAL_DOMAIN, 1))
        model = helper.make_model(
            self.graph(graph_name),
            opset_imports=opsets,
            functions=list(self.functions.values()),
            producer_name="seqserve",
            doc_string=doc,
        )
        model.ir_version = IR_VERSION
        return model


FLOAT = TensorProto.FLOAT
BOOL = TensorProto.BOOL
INT64 = TensorProto.INT64
INT32 = TensorProto.INT32
