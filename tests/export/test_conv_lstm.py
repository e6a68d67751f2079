"""ConvLSTM1D/2D/3D exported as a seqserve-domain ONNX function match Keras to 1e-5, for every
geometry and option, stateful over consecutive calls, and from real tf.keras 2 `.h5` files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

keras = pytest.importorskip("keras")

from seqserve.errors import ExportError  # noqa: E402
from seqserve.export import export_model  # noqa: E402
from seqserve.export.builder import LOCAL_DOMAIN  # noqa: E402
from seqserve.export.layers import conv_lstm  # noqa: E402
from seqserve.store.signature import MODEL_FILE, Signature  # noqa: E402

TOL = 1e-5
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keras2"
STEPS, GRID, CHANNELS, FILTERS, BATCH = 4, 5, 2, 3, 2
# Ops a CUDA-target ConvLSTM may use: all run on ORT's CUDA EP (no RNN-family op anywhere).
CUDA_SAFE_OPS = {
    "Conv", "Add", "Mul", "Sigmoid", "Tanh", "HardSigmoid", "Relu", "Elu", "Split", "Transpose",
    "Reshape", "Shape", "Concat", "Scan", "Identity", "Constant",
}


# ------------------------------------------------------------------------------------ helpers


def randomize(model: Any, rng: np.random.Generator) -> None:
    """Weights in +-0.5 (gates away from 0.5, hard_sigmoid's clip reached); positive variances."""
    for layer in model.layers:
        weights = []
        for w, var in zip(layer.get_weights(), layer.weights, strict=True):
            if "variance" in var.path:
                weights.append(rng.uniform(0.5, 1.5, w.shape).astype(np.float32))
            else:
                weights.append(rng.uniform(-0.5, 0.5, w.shape).astype(np.float32))
        layer.set_weights(weights)


def export_session(model: Any, tmp: Path, name: str, target: str = "cpu") -> tuple[ort.InferenceSession, Signature]:
    src = tmp / f"{name}.keras"
    model.save(src)
    report = export_model(src, name=name, store=tmp / "store", target=target, progress=False)
    session = ort.InferenceSession(str(report.path / MODEL_FILE), providers=["CPUExecutionProvider"])
    return session, report.signature


def run_zero_state(session: ort.InferenceSession, sig: Signature, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    batch = next(iter(inputs.values())).shape[0]
    feeds = dict(inputs)
    for s in sig.states:
        feeds[s.input] = np.zeros([batch, *s.shape[1:]], np.float32)
    return session.run([o.name for o in sig.outputs], feeds)


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def function_ops(path_or_model: Any) -> set[str]:
    model = path_or_model if isinstance(path_or_model, onnx.ModelProto) else onnx.load(path_or_model)
    ops: set[str] = set()

    def walk(nodes: Any) -> None:
        for node in nodes:
            ops.add(node.op_type)
            for attr in node.attribute:
                if attr.g.node:
                    walk(attr.g.node)

    for fn in model.functions:
        walk(fn.node)
    return ops


# ------------------------------------------------------------------------- ConvLSTM2D matrix

GEOMETRIES = [  # padding, kernel, strides, dilation
    ("valid", 3, 1, 1),
    ("same", 3, 1, 1),
    ("valid", 3, 2, 1),
    ("same", 3, 2, 1),
    ("valid", 2, 1, 2),
    ("same", 3, 1, 2),
    ("same", (2, 3), (2, 1), 1),  # even kernel: Keras puts the odd padding pixel at the end
    ("valid", (3, 2), 1, (2, 1)),
]
ACTIVATIONS = [  # activation, recurrent_activation
    ("tanh", "sigmoid"),
    ("tanh", "hard_sigmoid"),
    ("relu", "sigmoid"),
    ("elu", "hard_sigmoid"),
    ("linear", "sigmoid"),
    ("tanh", "relu"),
]


def _matrix() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    i = 0
    for data_format in ("channels_last", "channels_first"):
        for padding, kernel, strides, dilation in GEOMETRIES:
            act, rec = ACTIVATIONS[i % len(ACTIVATIONS)]
            kwargs = dict(
                kernel_size=kernel, padding=padding, strides=strides, dilation_rate=dilation,
                data_format=data_format, activation=act, recurrent_activation=rec,
                return_sequences=i % 2 == 0, return_state=i % 3 == 0, go_backwards=i % 4 in (1, 2),
                use_bias=i % 5 != 4, unit_forget_bias=i % 7 != 3, dropout=0.3 if i % 6 == 1 else 0.0,
                recurrent_dropout=0.3 if i % 6 == 2 else 0.0,
            )
            flags = [f for f, on in (("seq", kwargs["return_sequences"]), ("state", kwargs["return_state"]),
                                     ("back", kwargs["go_backwards"]), ("nobias", not kwargs["use_bias"])) if on]
            case_id = "-".join([
                "cl" if data_format == "channels_last" else "cf", padding, f"k{kernel}", f"s{strides}",
                f"d{dilation}", f"{act}+{rec}", *flags,
            ]).replace(" ", "")
            cases.append((case_id, kwargs))
            i += 1
    return cases


MATRIX = _matrix()


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """One Keras model holding every configuration as a branch: one save, export and predict."""
    x_last = keras.Input((STEPS, GRID, GRID, CHANNELS), name="x_last")
    x_first = keras.Input((STEPS, CHANNELS, GRID, GRID), name="x_first")
    outputs, spans = [], {}
    for case_id, kwargs in MATRIX:
        x = x_first if kwargs["data_format"] == "channels_first" else x_last
        out = as_list(keras.layers.ConvLSTM2D(FILTERS, **kwargs)(x))
        spans[case_id] = (len(outputs), len(outputs) + len(out))
        outputs.extend(out)
    model = keras.Model([x_last, x_first], outputs)
    rng = np.random.default_rng(7)
    randomize(model, rng)
    inputs = {
        "x_last": (2 * rng.standard_normal((BATCH, STEPS, GRID, GRID, CHANNELS))).astype(np.float32),
        "x_first": (2 * rng.standard_normal((BATCH, STEPS, CHANNELS, GRID, GRID))).astype(np.float32),
    }
    tmp = tmp_path_factory.mktemp("conv_lstm_matrix")
    session, sig = export_session(model, tmp, "matrix")
    got = run_zero_state(session, sig, inputs)
    want = as_list(model.predict([inputs["x_last"], inputs["x_first"]], verbose=0))
    assert len(got) == len(want)
    return {case: (got[a:b], want[a:b]) for case, (a, b) in spans.items()}


@pytest.mark.parametrize("case_id", [c for c, _ in MATRIX])
def test_conv_lstm2d_matches_keras(matrix_run: dict, case_id: str) -> None:
    got, want = matrix_run[case_id]
    for g, w in zip(got, want, strict=True):
        assert max_diff(g, w) <= TOL


def test_conv_lstm2d_states_are_graph_io_in_keras_layout(tmp_path: Path) -> None:
    x = keras.Input((STEPS, GRID, GRID, CHANNELS), name="x")
    y = keras.layers.ConvLSTM2D(FILTERS, 3, padding="valid", strides=2, name="cl")(x)
    x2 = keras.Input((STEPS, CHANNELS, GRID, GRID), name="x2")
    y2 = keras.layers.ConvLSTM2D(FILTERS, 3, padding="same", data_format="channels_first", name="cf")(x2)
    model = keras.Model([x, x2], [y, y2])
    session, sig = export_session(model, tmp_path, "io")
    states = {(s.layer, s.kind): s for s in sig.states}
    assert set(states) == {("cl", "h"), ("cl", "c"), ("cf", "h"), ("cf", "c")}
    assert states["cl", "h"].shape == [-1, 2, 2, FILTERS]
    assert states["cf", "c"].shape == [-1, FILTERS, GRID, GRID]
    assert states["cl", "h"].input == "state_in.cl.h" and states["cl", "c"].output == "state_out.cl.c"
    graph = onnx.load(sig_path := tmp_path / "store" / "io" / "1" / MODEL_FILE)
    calls = [n for n in graph.graph.node if n.domain == LOCAL_DOMAIN]
    assert len(calls) == 2 and {f.domain for f in graph.functions} == {LOCAL_DOMAIN}
    assert "Scan" in function_ops(sig_path) and "LSTM" not in function_ops(sig_path)


def test_conv_lstm2d_initial_state_from_other_inputs(tmp_path: Path) -> None:
    x = keras.Input((STEPS, GRID, GRID, CHANNELS), name="x")
    h0 = keras.Input((GRID, GRID, FILTERS), name="h0")
    c0 = keras.Input((GRID, GRID, FILTERS), name="c0")
    y = keras.layers.ConvLSTM2D(FILTERS, 3, padding="same", return_sequences=True, name="y")(
        x, initial_state=[h0, c0]
    )
    model = keras.Model([x, h0, c0], y)
    rng = np.random.default_rng(3)
    randomize(model, rng)
    inputs = {
        "x": rng.standard_normal((BATCH, STEPS, GRID, GRID, CHANNELS)).astype(np.float32),
        "h0": rng.standard_normal((BATCH, GRID, GRID, FILTERS)).astype(np.float32),
        "c0": rng.standard_normal((BATCH, GRID, GRID, FILTERS)).astype(np.float32),
    }
    session, sig = export_session(model, tmp_path, "init")
    (got,) = run_zero_state(session, sig, inputs)
    want = model.predict([inputs["x"], inputs["h0"], inputs["c0"]], verbose=0)
    assert max_diff(got, want) <= TOL


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
def test_stateful_conv_lstm2d_carries_state_over_calls(tmp_path: Path, go_backwards: bool) -> None:
    x = keras.Input(batch_shape=(BATCH, STEPS, GRID, GRID, CHANNELS), name="x")
    y = keras.layers.ConvLSTM2D(
        FILTERS, 3, padding="same", stateful=True, return_sequences=True, go_backwards=go_backwards, name="y"
    )(x)
    model = keras.Model(x, y)
    rng = np.random.default_rng(11)
    randomize(model, rng)
    session, sig = export_session(model, tmp_path, "stateful")
    assert sig.stateful
    states = {s.input: np.zeros([BATCH, *s.shape[1:]], np.float32) for s in sig.states}
    for _ in range(3):
        xs = rng.standard_normal((BATCH, STEPS, GRID, GRID, CHANNELS)).astype(np.float32)
        want = model.predict(xs, batch_size=BATCH, verbose=0)
        names = [sig.outputs[0].name] + [s.output for s in sig.states]
        got, *finals = session.run(names, {"x": xs, **states})
        assert max_diff(got, want) <= TOL
        states = {s.input: v for s, v in zip(sig.states, finals, strict=True)}


@pytest.mark.parametrize("rank", [1, 3])
def test_conv_lstm1d_and_3d_match_keras(tmp_path: Path, rank: int) -> None:
    layer_cls = {1: keras.layers.ConvLSTM1D, 3: keras.layers.ConvLSTM3D}[rank]
    spatial = (GRID,) * rank if rank == 1 else (4, 4, 3)
    x = keras.Input((STEPS, *spatial, CHANNELS), name="x")
    x_first = keras.Input((STEPS, CHANNELS, *spatial), name="x_first")
    a = layer_cls(FILTERS, 2, padding="same", return_sequences=True, name="a")(x)
    b = layer_cls(FILTERS, 3, padding="valid", strides=1 if rank == 3 else 2, go_backwards=True,
                  recurrent_activation="hard_sigmoid", return_state=True, name="b")(x)
    c = layer_cls(FILTERS, 2, padding="valid", dilation_rate=2 if rank == 1 else 1, data_format="channels_first",
                  return_sequences=True, name="c")(x_first)
    model = keras.Model([x, x_first], [a, *b, c])
    rng = np.random.default_rng(rank)
    randomize(model, rng)
    inputs = {
        "x": (2 * rng.standard_normal((BATCH, STEPS, *spatial, CHANNELS))).astype(np.float32),
        "x_first": (2 * rng.standard_normal((BATCH, STEPS, CHANNELS, *spatial))).astype(np.float32),
    }
    session, sig = export_session(model, tmp_path, f"conv_lstm{rank}d")
    got = run_zero_state(session, sig, inputs)
    want = as_list(model.predict([inputs["x"], inputs["x_first"]], verbose=0))
    assert len(got) == len(want) == 5
    for g, w in zip(got, want, strict=True):
        assert max_diff(g, w) <= TOL


def test_next_frame_example_matches_keras_for_any_sequence_length(tmp_path: Path) -> None:
    """Keras' conv_lstm example (next-frame prediction) as written, with fewer filters."""
    x = keras.Input((None, 8, 8, 1), name="frames")
    h = keras.layers.ConvLSTM2D(4, (5, 5), padding="same", return_sequences=True, activation="relu")(x)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ConvLSTM2D(4, (3, 3), padding="same", return_sequences=True, activation="relu")(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ConvLSTM2D(4, (1, 1), padding="same", return_sequences=True, activation="relu")(h)
    y = keras.layers.Conv3D(1, (3, 3, 3), activation="sigmoid", padding="same", name="next_frames")(h)
    model = keras.Model(x, y)
    rng = np.random.default_rng(5)
    randomize(model, rng)
    session, sig = export_session(model, tmp_path, "next_frame")
    assert len(sig.states) == 6
    for steps in (3, 6):
        xs = rng.uniform(0, 1, (BATCH, steps, 8, 8, 1)).astype(np.float32)
        (got,) = run_zero_state(session, sig, {"frames": xs})
        assert max_diff(got, model.predict(xs, verbose=0)) <= TOL


@pytest.mark.parametrize("form", conv_lstm.FORMS)
def test_every_graph_form_matches_keras(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    """The forms not chosen stay exact too, so a re-measurement (GPU, another ORT) can switch."""
    monkeypatch.setattr(conv_lstm, "FORM", form)
    x = keras.Input((STEPS, GRID, GRID, CHANNELS), name="x")
    y = keras.layers.ConvLSTM2D(FILTERS, 3, padding="same", return_sequences=True, go_backwards=True, name="y")(x)
    model = keras.Model(x, y)
    rng = np.random.default_rng(9)
    randomize(model, rng)
    session, sig = export_session(model, tmp_path, f"form_{form}")
    xs = rng.standard_normal((BATCH, STEPS, GRID, GRID, CHANNELS)).astype(np.float32)
    (got,) = run_zero_state(session, sig, {"x": xs})
    assert max_diff(got, model.predict(xs, verbose=0)) <= TOL


def test_cuda_target_uses_only_ops_the_cuda_ep_runs_and_still_runs_on_cpu(tmp_path: Path) -> None:
    x = keras.Input((STEPS, GRID, GRID, CHANNELS), name="x")
    y = keras.layers.ConvLSTM2D(FILTERS, 3, padding="same", recurrent_activation="hard_sigmoid",
                                return_sequences=True, name="y")(x)
    model = keras.Model(x, y)
    rng = np.random.default_rng(2)
    randomize(model, rng)
    session, sig = export_session(model, tmp_path, "cuda_target", target="cuda")
    path = tmp_path / "store" / "cuda_target" / "1" / MODEL_FILE
    assert function_ops(path) <= CUDA_SAFE_OPS
    xs = rng.standard_normal((BATCH, STEPS, GRID, GRID, CHANNELS)).astype(np.float32)
    (got,) = run_zero_state(session, sig, {"x": xs})
    assert max_diff(got, model.predict(xs, verbose=0)) <= TOL


def test_softmax_cell_activation_is_a_clear_error(tmp_path: Path) -> None:
    """Softmax reduces over Keras' last axis, which the channels-first cell does not have there."""
    x = keras.Input((STEPS, GRID, GRID, CHANNELS), name="x")
    y = keras.layers.ConvLSTM2D(FILTERS, 3, activation="softmax", name="bad")(x)
    src = tmp_path / "bad.keras"
    keras.Model(x, y).save(src)
    with pytest.raises(ExportError, match="layer 'bad'.*softmax"):
        export_model(src, name="bad", store=tmp_path / "store", progress=False)
    assert not (tmp_path / "store" / "bad").exists()


# ------------------------------------------------------------------------ tf.keras 2 fixtures


@pytest.mark.parametrize("fixture", ["conv_lstm2d_same", "conv_lstm2d_valid"])
def test_keras2_h5_conv_lstm2d_matches_tf_keras(tmp_path: Path, fixture: str) -> None:
    """Written by tf_keras 2.21 (default recurrent_activation hard_sigmoid = 0.2x+0.5)."""
    data = np.load(FIXTURES / f"{fixture}.npz")
    report = export_model(FIXTURES / f"{fixture}.h5", name=fixture, store=tmp_path / "store", progress=False)
    session = ort.InferenceSession(str(report.path / MODEL_FILE), providers=["CPUExecutionProvider"])
    (got,) = run_zero_state(session, report.signature, {"x": data["x"]})
    assert max_diff(got, data["y"]) <= TOL
