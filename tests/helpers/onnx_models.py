"""Small hand-built ONNX models with signatures, for testing the server without the exporter.

`write_lstm_model` mimics what the exporter writes for a Keras LSTM: batch-major input, two outputs,
and the recurrent state as explicit graph inputs and outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from seqserve.store.signature import MODEL_FILE, Signature, StateSpec, TensorSpec

OPSET = 17
FEATURES, UNITS = 3, 4


def _save(model: onnx.ModelProto, signature: Signature, store: Path, name: str, version: int) -> Path:
    onnx.checker.check_model(model)
    directory = Path(store) / name / str(version)
    directory.mkdir(parents=True, exist_ok=False)
    onnx.save(model, str(directory / MODEL_FILE))
    signature.write(directory)
    return directory


def write_lstm_model(
    store: Path,
    name: str = "lstm",
    version: int = 1,
    seed: int = 0,
    stateful: bool = False,
    features: int = FEATURES,
    units: int = UNITS,
) -> Path:
    """x [N,T,3] -> LSTM(4) -> `last` [N,4] and `sequence` [N,T,4]; states `lstm.h`, `lstm.c` (other
    sizes on request: a larger model shows what a leak of it would cost)."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-0.5, 0.5, (1, 4 * units, features)).astype(np.float32)
    r = rng.uniform(-0.5, 0.5, (1, 4 * units, units)).astype(np.float32)
    b = rng.uniform(-0.5, 0.5, (1, 8 * units)).astype(np.float32)
    axis0 = numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0")
    # ORT's CPU LSTM takes time-major tensors only (layout=0): transpose around it.
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_tnf"], perm=[1, 0, 2]),
        helper.make_node("Unsqueeze", ["state_in.lstm.h", "axis0"], ["h0"]),
        helper.make_node("Unsqueeze", ["state_in.lstm.c", "axis0"], ["c0"]),
        helper.make_node("LSTM", ["x_tnf", "W", "R", "B", "", "h0", "c0"], ["Y", "Y_h", "Y_c"], hidden_size=units),
        helper.make_node("Squeeze", ["Y", "axis1"], ["y_tnh"]),
        helper.make_node("Transpose", ["y_tnh"], ["sequence"], perm=[1, 0, 2]),
        helper.make_node("Squeeze", ["Y_h", "axis0"], ["last"]),
        helper.make_node("Identity", ["last"], ["state_out.lstm.h"]),
        helper.make_node("Squeeze", ["Y_c", "axis0"], ["state_out.lstm.c"]),
    ]
    graph = helper.make_graph(
        nodes,
        "lstm",
        inputs=[
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", features]),
            helper.make_tensor_value_info("state_in.lstm.h", TensorProto.FLOAT, ["N", units]),
            helper.make_tensor_value_info("state_in.lstm.c", TensorProto.FLOAT, ["N", units]),
        ],
        outputs=[
            helper.make_tensor_value_info("last", TensorProto.FLOAT, ["N", units]),
            helper.make_tensor_value_info("sequence", TensorProto.FLOAT, ["N", "T", units]),
            helper.make_tensor_value_info("state_out.lstm.h", TensorProto.FLOAT, ["N", units]),
            helper.make_tensor_value_info("state_out.lstm.c", TensorProto.FLOAT, ["N", units]),
        ],
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(r, "R"),
            numpy_helper.from_array(b, "B"),
            axis0,
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    signature = Signature(
        inputs=[TensorSpec("x", "FP32", [-1, -1, features])],
        outputs=[TensorSpec("last", "FP32", [-1, units]), TensorSpec("sequence", "FP32", [-1, -1, units])],
        states=[
            StateSpec(f"lstm.{k}", f"state_in.lstm.{k}", f"state_out.lstm.{k}", "FP32", [-1, units], "lstm", k)
            for k in ("h", "c")
        ],
        stateful=stateful,
        source={"file": "hand-built", "format": "onnx"},
    )
    return _save(model, signature, store, name, version)


def write_embedding_model(store: Path, name: str = "embed", version: int = 1) -> Path:
    """tokens INT64 [N,T] -> embedding table (10 x 2) -> sum over time -> `score` FP32 [N,2]. No state."""
    table = np.arange(20, dtype=np.float32).reshape(10, 2) / 10
    nodes = [
        helper.make_node("Gather", ["table", "tokens"], ["embedded"]),
        helper.make_node("ReduceSum", ["embedded", "axis1"], ["score"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "embed",
        inputs=[helper.make_tensor_value_info("tokens", TensorProto.INT64, ["N", "T"])],
        outputs=[helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    signature = Signature(
        inputs=[TensorSpec("tokens", "INT64", [-1, -1])],
        outputs=[TensorSpec("score", "FP32", [-1, 2])],
        source={"file": "hand-built", "format": "onnx"},
    )
    return _save(model, signature, store, name, version)


def run_directly(directory: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The oracle for serving tests: the same model run in-process by ONNX Runtime, zero states fed."""
    import onnxruntime as ort

    signature = Signature.read(directory)
    session = ort.InferenceSession(str(directory / MODEL_FILE), providers=["CPUExecutionProvider"])
    batch = next(iter(feeds.values())).shape[0]
    full = dict(feeds)
    for s in signature.states:
        full[s.input] = np.zeros([batch, *s.shape[1:]], dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, full), strict=True))
