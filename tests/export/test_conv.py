"""Conv1D/2D/3D and Max/AveragePooling exported as ONNX Conv/MaxPool/AveragePool match Keras to
1e-5 for every padding, stride, dilation, data format, activation and bias option."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

keras = pytest.importorskip("keras")

from seqserve.export import export_model  # noqa: E402
from seqserve.store.signature import MODEL_FILE  # noqa: E402

TOL = 1e-5
BATCH = 2
L = keras.layers

# Input name -> shape without the batch; the 1D channels_last input has a free length.
INPUTS = {
    "x1_last": (None, 4),
    "x1_first": (4, 9),
    "x2_last": (6, 7, 4),
    "x2_first": (4, 6, 7),
    "x3_last": (4, 5, 6, 2),
    "x3_first": (2, 4, 5, 6),
}


def _conv_cases() -> list[tuple[str, str, Any]]:
    """(id, input name, layer factory) for every convolution configuration."""
    cases: list[tuple[str, str, Any]] = []
    acts = ["linear", "relu", "sigmoid", "tanh", "softmax", "elu"]
    i = 0
    geometries = {
        1: [("valid", 3, 1, 1), ("same", 3, 2, 1), ("causal", 3, 1, 2), ("same", 2, 1, 3), ("valid", 2, 3, 1),
            ("causal", 2, 2, 1)],
        2: [("valid", 3, 1, 1), ("same", 3, 1, 1), ("valid", 3, 2, 1), ("same", 3, 2, 1), ("same", (2, 3), 1, 2),
            ("valid", (3, 2), (1, 2), 1), ("same", 2, (2, 3), 1)],
        3: [("valid", 2, 1, 1), ("same", 3, 2, 1), ("same", (2, 3, 3), 1, (1, 2, 1))],
    }
    classes = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}
    for rank, geos in geometries.items():
        for fmt in ("channels_last", "channels_first"):
            for padding, kernel, strides, dilation in geos:
                if padding == "causal" and fmt == "channels_first":
                    continue
                act = acts[i % len(acts)]
                use_bias = i % 4 != 3
                groups = 2 if rank == 2 and i % 5 == 0 else 1
                kwargs = dict(kernel_size=kernel, padding=padding, strides=strides, dilation_rate=dilation,
                              data_format=fmt, activation=act, use_bias=use_bias, groups=groups)
                case_id = "-".join(
                    [f"conv{rank}d", "cl" if fmt == "channels_last" else "cf", padding, f"k{kernel}",
                     f"s{strides}", f"d{dilation}", act]
                    + ([] if use_bias else ["nobias"]) + ([f"g{groups}"] if groups > 1 else [])
                ).replace(" ", "")
                cases.append((case_id, f"x{rank}_{fmt.split('_')[1]}",
                              lambda cls=classes[rank], kw=kwargs: cls(4, **kw)))
                i += 1
    return cases


def _pool_cases() -> list[tuple[str, str, Any]]:
    cases: list[tuple[str, str, Any]] = []
    for rank in (1, 2, 3):
        for kind, cls in (("max", getattr(L, f"MaxPooling{rank}D")), ("avg", getattr(L, f"AveragePooling{rank}D"))):
            for fmt in ("channels_last", "channels_first"):
                for padding, pool, strides in (("valid", 2, None), ("same", 3, 2), ("same", 2, 1)):
                    layout = "cl" if fmt == "channels_last" else "cf"
                    case_id = f"{kind}pool{rank}d-{layout}-{padding}-p{pool}-s{strides}"
                    cases.append((case_id, f"x{rank}_{fmt.split('_')[1]}",
                                  lambda cls=cls, kw=dict(pool_size=pool, strides=strides, padding=padding,
                                                          data_format=fmt): cls(**kw)))
    return cases


def _global_pool_cases() -> list[tuple[str, str, Any]]:
    cases: list[tuple[str, str, Any]] = []
    for rank in (1, 2, 3):
        for kind in ("Average", "Max"):
            for fmt in ("channels_last", "channels_first"):
                keepdims = (rank + len(kind) + len(fmt)) % 2 == 0
                layout = "cl" if fmt == "channels_last" else "cf"
                case_id = f"global{kind.lower()}pool{rank}d-{layout}" + ("-keepdims" if keepdims else "")
                cls = getattr(L, f"Global{kind}Pooling{rank}D")
                cases.append((case_id, f"x{rank}_{fmt.split('_')[1]}",
                              lambda cls=cls, kw=dict(data_format=fmt, keepdims=keepdims): cls(**kw)))
    return cases


CASES = _conv_cases() + _pool_cases() + _global_pool_cases()


def _randomize(model: Any, rng: np.random.Generator) -> None:
    for layer in model.layers:
        layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])


def _export(model: Any, tmp: Path, name: str) -> tuple[ort.InferenceSession, Any]:
    src = tmp / f"{name}.keras"
    model.save(src)
    report = export_model(src, name=name, store=tmp / "store", progress=False)
    session = ort.InferenceSession(str(report.path / MODEL_FILE), providers=["CPUExecutionProvider"])
    return session, report


@pytest.fixture(scope="module")
def conv_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """All cases as branches of one model: one save, export and predict. Per case: (ONNX output,
    Keras output, the input)."""
    inputs = {name: keras.Input(shape, name=name) for name, shape in INPUTS.items()}
    outputs = [factory()(inputs[inp]) for _, inp, factory in CASES]
    model = keras.Model(list(inputs.values()), outputs)
    rng = np.random.default_rng(0)
    _randomize(model, rng)
    data = {name: rng.standard_normal((BATCH, *(8 if d is None else d for d in shape))).astype(np.float32)
            for name, shape in INPUTS.items()}
    session, report = _export(model, tmp_path_factory.mktemp("conv_matrix"), "conv_matrix")
    got = session.run([o.name for o in report.signature.outputs], data)
    want = model.predict([data[n] for n in INPUTS], verbose=0)
    return {case_id: (g, w, data[inp]) for (case_id, inp, _), g, w in zip(CASES, got, want, strict=True)}


# Keras' torch backend pads an uneven "same" average-pooling window with repeated edge values and
# averages over them; TF and JAX (and Keras' docs) average over the real values only. A .keras
# file does not say which backend saved it, so the export follows the documented semantics, and
# these cases are checked against a NumPy reference of them instead of the torch backend.
UNEVEN_SAME_AVERAGE = {c[0] for c in CASES if c[0].startswith("avgpool") and c[0].endswith("same-p3-s2")}


def average_pool_same(x: np.ndarray, pool: int, stride: int, channels_first: bool) -> np.ndarray:
    """Average over the valid part of each "same" window (TF's padding: odd pixel at the end)."""
    if not channels_first:
        x = np.moveaxis(x, -1, 1)
    spatial = x.shape[2:]
    pads = []
    for n in spatial:
        out = -(-n // stride)
        total = max(0, (out - 1) * stride + pool - n)
        pads.append((total // 2, total - total // 2))
    padded = np.pad(x, [(0, 0), (0, 0), *pads], constant_values=np.nan)
    outs = [-(-n // stride) for n in spatial]
    y = np.empty((*x.shape[:2], *outs), np.float32)
    for idx in np.ndindex(*outs):
        window = tuple(slice(i * stride, i * stride + pool) for i in idx)
        y[(..., *idx)] = np.nanmean(padded[(..., *window)].reshape(*x.shape[:2], -1), axis=-1)
    return y if channels_first else np.moveaxis(y, 1, -1)


@pytest.mark.parametrize("case_id", [c[0] for c in CASES])
def test_convolution_and_pooling_match_keras(conv_run: dict, case_id: str) -> None:
    got, want = conv_run[case_id][:2]
    if case_id in UNEVEN_SAME_AVERAGE:
        want = average_pool_same(conv_run[case_id][2], 3, 2, "-cf-" in case_id)
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) <= TOL


def test_conv1d_same_strided_on_free_length_matches_keras_for_several_lengths(tmp_path: Path) -> None:
    """Padding that depends on an unknown length: the graph computes it (auto_pad SAME_UPPER)."""
    x = keras.Input((None, 3), name="x")
    y = L.Conv1D(2, 4, strides=3, padding="same", name="y")(x)
    model = keras.Model(x, y)
    rng = np.random.default_rng(1)
    _randomize(model, rng)
    session, _ = _export(model, tmp_path, "free_length")
    for length in (5, 6, 7, 12):
        xs = rng.standard_normal((BATCH, length, 3)).astype(np.float32)
        (got,) = session.run(None, {"x": xs})
        assert float(np.abs(got - model.predict(xs, verbose=0)).max()) <= TOL


def test_channels_last_layer_adds_one_transpose_each_side(tmp_path: Path) -> None:
    x = keras.Input((6, 6, 3), name="x")
    y = L.Conv2D(4, 3, padding="same", activation="relu")(x)
    y = L.MaxPooling2D()(y)
    y = L.Conv2D(2, 3, name="y")(y)
    model = keras.Model(x, y)
    rng = np.random.default_rng(2)
    _randomize(model, rng)
    session, report = _export(model, tmp_path, "chain")
    ops = [n.op_type for n in onnx.load(report.path / MODEL_FILE).graph.node]
    assert ops.count("Transpose") == 6 and ops.count("Conv") == 2 and ops.count("MaxPool") == 1
    xs = rng.standard_normal((BATCH, 6, 6, 3)).astype(np.float32)
    (got,) = session.run(None, {"x": xs})
    assert float(np.abs(got - model.predict(xs, verbose=0)).max()) <= TOL


def test_time_distributed_conv2d_matches_keras(tmp_path: Path) -> None:
    x = keras.Input((None, 6, 6, 2), name="x")
    y = L.TimeDistributed(L.Conv2D(3, 3, strides=2, padding="same", activation="relu"), name="y")(x)
    model = keras.Model(x, y)
    rng = np.random.default_rng(3)
    _randomize(model, rng)
    session, _ = _export(model, tmp_path, "td_conv")
    xs = rng.standard_normal((BATCH, 4, 6, 6, 2)).astype(np.float32)
    (got,) = session.run(None, {"x": xs})
    assert float(np.abs(got - model.predict(xs, verbose=0)).max()) <= TOL


def test_uneven_same_average_pooling_follows_the_torch_backend_when_the_file_names_it(tmp_path: Path) -> None:
    """A legacy .h5 written by Keras 3 records its backend: then the torch backend's edge padding."""
    x = keras.Input((8, 6, 3), name="x")
    model = keras.Model(x, L.AveragePooling2D(3, 2, padding="same", name="y")(x))
    src = tmp_path / "pool.h5"
    model.save(src)
    report = export_model(src, name="pool", store=tmp_path / "store", progress=False)
    session = ort.InferenceSession(str(report.path / MODEL_FILE), providers=["CPUExecutionProvider"])
    xs = np.random.default_rng(4).standard_normal((BATCH, 8, 6, 3)).astype(np.float32)
    (got,) = session.run(None, {"x": xs})
    assert float(np.abs(got - model.predict(xs, verbose=0)).max()) <= TOL


def test_global_average_pooling1d_averages_unmasked_steps_like_keras(tmp_path: Path) -> None:
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    y = L.Embedding(7, 3, mask_zero=True)(tokens)
    y = L.GlobalAveragePooling1D(name="y")(y)
    model = keras.Model(tokens, y)
    rng = np.random.default_rng(6)
    _randomize(model, rng)
    ids = rng.integers(1, 7, (3, 6)).astype(np.int32)
    ids[0, :2] = 0  # front padding
    ids[1, 4:] = 0  # back padding
    session, _ = _export(model, tmp_path, "masked_mean")
    (got,) = session.run(None, {"tokens": ids})
    assert float(np.abs(got - model.predict(ids, verbose=0)).max()) <= TOL
