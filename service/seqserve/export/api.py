"""`export_model`: a Keras file -> a new version in the model store (model.onnx + signature.json)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from seqserve.datatypes import to_v2_datatype
from seqserve.errors import ExportError
from seqserve.export.convert import BuiltGraph, build_onnx, np_dtype
from seqserve.export.target import Target
from seqserve.keras import KerasModel, load_keras_model
from seqserve.store.signature import MODEL_FILE, Signature, StateSpec, TensorSpec


@dataclass
class ExportReport:
    """What an export did, for the CLI to print and for callers to inspect."""

    name: str
    version: int
    path: Path
    layers: list[tuple[str, str]]
    n_params: int
    signature: Signature
    forms: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        sig = self.signature
        classes: dict[str, int] = {}
        for _, cls in self.layers:
            classes[cls] = classes.get(cls, 0) + 1
        lines = [
            f"exported {sig.source.get('file')} ({sig.source.get('format')}, Keras "
            f"{sig.source.get('keras_version')}) -> {self.path}",
            f"  layers: {len(self.layers)} (" + ", ".join(f"{n} {c}" if n > 1 else c for c, n in classes.items()) + ")",
            f"  parameters: {self.n_params:,}",
            "  inputs: " + ", ".join(f"{t.name} {t.datatype}{t.shape}" for t in sig.inputs),
            "  outputs: " + ", ".join(f"{t.name} {t.datatype}{t.shape}" for t in sig.outputs),
            f"  state tensors: {len(sig.states)}"
            + (" (" + ", ".join(s.name for s in sig.states) + ")" if sig.states else ""),
            f"  stateful: {sig.stateful}, target: {sig.target}",
            "  graph: " + ", ".join(f"{n} {op}" for op, n in sorted(self.forms.items())),
        ]
        parity = sig.parity
        if parity.get("max_abs_diff") is None:
            lines.append(f"  parity: {parity.get('against', 'not measured')}")
        else:
            lines.append(f"  parity: max abs diff {parity['max_abs_diff']:.2e} against {parity['against']}")
        return "\n".join(lines)


def export_model(
    src: str | Path,
    name: str,
    store: str | Path = "model_store",
    version: int | None = None,
    stateful: bool | None = None,
    target: Literal["cpu", "cuda"] = "cpu",
    progress: bool = True,
    weights: str | Path | None = None,
) -> ExportReport:
    """Export the Keras model file `src` as version `version` of `name` in the model store
    (`weights`: the save_weights file of a `.json`/`.yaml` architecture `src`).

    Everything is checked and built before the store is touched; the files are written into a
    temporary directory next to the versions and renamed into place, so a failure leaves nothing.
    """
    chosen = Target.named(target)
    if not name or "/" in name or name.startswith("."):
        raise ExportError(f"invalid model name {name!r}")
    src = Path(src)
    model = load_keras_model(src, weights=weights)
    built = _build_with_progress(model, chosen, progress)
    onnx_model = built.model
    try:
        onnx.checker.check_model(onnx_model)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{src}: exported graph is invalid: {str(e).splitlines()[0]}") from None
    parity = _measure_parity(src, model, onnx_model, built, progress)

    signature = Signature(
        inputs=[TensorSpec(i.name, _v2(i.elem_type), i.shape) for i in built.inputs],
        outputs=[TensorSpec(o.name, _v2(o.elem_type), o.shape) for o in built.outputs],
        states=[
            StateSpec(f"{s.layer}.{s.kind}", s.input, s.output, "FP32", list(s.shape), s.layer, s.kind)
            for s in built.states
        ],
        stateful=bool(built.stateful_layers) if stateful is None else bool(stateful),
        target=chosen.name,
        source={
            "file": src.name,
            "format": model.format,
            "keras_version": model.keras_version,
            "backend": model.backend,
            "layer_classes": sorted(
                {layer.class_name for layer in model.layers if not layer.class_name.startswith("_")}
            ),
        },
        parity=parity,
        vocabulary_sizes=dict(built.vocabulary_sizes),
    )

    model_dir = Path(store) / name
    version = _choose_version(model_dir, version, src)
    created_dir = not model_dir.exists()
    model_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".export-{version}-", dir=model_dir))
    final = model_dir / str(version)
    try:
        onnx.save_model(onnx_model, str(tmp / MODEL_FILE))
        signature.write(tmp)
        try:
            os.rename(tmp, final)  # atomic; fails if another export took this version meanwhile
        except OSError:
            if final.exists():
                raise ExportError(f"{src}: version {version} of {name!r} appeared while exporting") from None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_dir:
            with contextlib.suppress(OSError):
                model_dir.rmdir()  # only if still empty: never remove what a concurrent export wrote
        raise
    forms = _graph_forms(onnx_model.graph)
    return ExportReport(
        name=name,
        version=version,
        path=final,
        layers=[(layer.name, layer.class_name) for layer in model.layers if not layer.class_name.startswith("_")],
        n_params=model.n_params,
        signature=signature,
        forms=forms,
    )


def _graph_forms(graph: onnx.GraphProto, forms: dict[str, int] | None = None) -> dict[str, int]:
    """How many recurrent-form nodes (LSTM, GRU, RNN, Scan, Loop, If, local functions) the graph holds,
    counting the branches of If nodes but not the bodies of Scans."""
    forms = {} if forms is None else forms
    for node in graph.node:
        if node.op_type in ("LSTM", "GRU", "RNN", "Scan", "Loop", "If") or node.domain:
            forms[node.op_type] = forms.get(node.op_type, 0) + 1
        if node.op_type == "If":
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    _graph_forms(attr.g, forms)
    return forms


def _v2(elem_type: int) -> str:
    return to_v2_datatype(np_dtype(elem_type))


def _choose_version(model_dir: Path, version: int | None, src: Path) -> int:
    existing = (
        [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()] if model_dir.is_dir() else []
    )
    if version is None:
        return max(existing, default=0) + 1
    if version < 1:
        raise ExportError(f"{src}: version must be >= 1, got {version}")
    if version in existing:
        raise ExportError(f"{src}: version {version} of {model_dir.name!r} already exists in {model_dir.parent}")
    return version


def _build_with_progress(model: KerasModel, target: Target, progress: bool) -> BuiltGraph:
    from tqdm import tqdm

    big = model.n_params > 5_000_000
    with tqdm(
        total=len(model.layers),
        desc=f"converting {Path(model.path).name}",
        unit="layer",
        disable=not progress or not big,
        leave=False,
    ) as bar:
        return build_onnx(model, target, on_layer=lambda _: bar.update(1))


def _random_feeds(
    model: KerasModel, built: BuiltGraph, seed: int = 0
) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Random inputs (ids within every Embedding's vocabulary) and random states, batch 2, 5 steps."""
    rng = np.random.default_rng(seed)
    vocab = min(
        [int(layer.config.get("input_dim", 10)) for layer in model.layers if layer.class_name == "Embedding"] + [10]
    )
    xs = []
    for i in built.inputs:
        shape = [2] + [5 if d == -1 else d for d in i.shape[1:]]
        dt = np_dtype(i.elem_type)
        if dt.kind in "iub":
            xs.append(rng.integers(0, max(vocab, 1), shape).astype(dt))
            continue
        x = rng.standard_normal(shape).astype(dt)
        if x.ndim >= 3 and shape[1] >= 4:
            # Zeroed steps exercise Masking(0.0) layers: front padding, and a hole plus back padding.
            x[0, :2] = 0
            x[1, 1] = 0
            x[1, -1] = 0
        xs.append(x)
    states = {
        f"{s.layer}.{s.kind}": (0.5 * rng.standard_normal([2, *s.shape[1:]])).astype(np.float32) for s in built.states
    }
    return xs, states


def _measure_parity(
    src: Path, model: KerasModel, onnx_model: onnx.ModelProto, built: BuiltGraph, progress: bool
) -> dict[str, Any]:
    """Run the graph in ONNX Runtime on random inputs and states (an export ORT cannot run is not
    written) and compare it with the NumPy reference of the layers, where there is one."""
    import onnxruntime as ort
    from tqdm import tqdm

    from seqserve.reference import NoReference, run_reference

    rounds = 2
    worst = 0.0
    missing: str | None = None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        sess = ort.InferenceSession(onnx_model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - any ORT failure means the export is unusable
        raise ExportError(f"{src}: exported graph does not load in ONNX Runtime: {str(e).splitlines()[0]}") from None
    slow = model.n_params > 1_000_000
    for seed in tqdm(range(rounds), desc="parity", disable=not progress or not slow, leave=False):
        xs, states = _random_feeds(model, built, seed)
        feeds: dict[str, Any] = {i.name: x for i, x in zip(built.inputs, xs, strict=False)}
        feeds.update({s.input: states[f"{s.layer}.{s.kind}"] for s in built.states})
        names = [o.name for o in built.outputs] + [s.output for s in built.states]
        try:
            got = sess.run(names, feeds)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"{src}: exported graph does not run in ONNX Runtime: {str(e).splitlines()[0]}") from None
        if missing is not None:
            continue
        # Layers whose initial state comes from the graph ignore their state input, as Keras does.
        try:
            outs, finals = run_reference(model, xs, states)
        except NoReference as e:
            missing = str(e)
            continue
        expected = outs + [finals[f"{s.layer}.{s.kind}"] for s in built.states]
        for g, w in zip(got, expected, strict=False):
            if g.size and np.asarray(w).shape == g.shape:
                d = np.abs(g.astype(np.float64) - np.asarray(w, np.float64))
                worst = max(worst, float(np.nanmax(d)) if np.isfinite(d).all() else float("inf"))
            elif g.size:
                worst = float("inf")
    if missing is not None:
        return {"max_abs_diff": None, "against": f"not measured (no NumPy reference for {missing})"}
    return {
        "max_abs_diff": worst,
        "against": f"seqserve.reference (NumPy float64 Keras {model.keras_major} semantics), "
        f"{rounds} random batches of 2 with random states",
    }
