"""Benchmark: ONNX Runtime time of seqserve's export vs tf2onnx's export of the same Keras model.

For each configuration (DESIGN.md's table: batch 32, T=100, 128 units; ConvLSTM2D batch 4, T=10,
32x32x8 -> 16) a Keras model is built and saved, exported by seqserve (this environment) and by
tf2onnx (the separate TensorFlow environment of bench/setup_tf_env.sh), then both graphs are timed
side by side in one process, interleaved, on the CPU execution provider. Both are checked against
Keras `predict` first. Writes bench/results/export_vs_tf2onnx-<device>.{json,md,png}.

    bash bench/setup_tf_env.sh            # once
    .venv/bin/python bench/export_vs_tf2onnx.py [--repeat 30] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from tqdm import tqdm  # noqa: E402

from seqserve.export import export_model  # noqa: E402

HERE = Path(__file__).resolve().parent
TF_PYTHON = HERE / ".envs" / "tf" / "bin" / "python"
BATCH, STEPS, FEATURES, UNITS = 32, 100, 64, 128
L = keras.layers


def _seq_input() -> keras.KerasTensor:
    return keras.Input(shape=(None, FEATURES), name="x")


def _tokens_input() -> keras.KerasTensor:
    return keras.Input(shape=(None,), dtype="int64", name="tokens")


def _masked(padding: str) -> Callable[[], tuple[keras.Model, np.ndarray]]:
    def build() -> tuple[keras.Model, np.ndarray]:
        inputs = _tokens_input()
        hidden = L.LSTM(UNITS, return_sequences=True)(L.Embedding(1000, FEATURES, mask_zero=True)(inputs))
        rng = np.random.default_rng(0)
        tokens = rng.integers(1, 1000, (BATCH, STEPS))
        lengths = rng.integers(STEPS // 2, STEPS + 1, BATCH)
        for row, n in zip(tokens, lengths, strict=True):
            if padding == "pre":
                row[: STEPS - n] = 0
            else:
                row[n:] = 0
        return keras.Model(inputs, hidden), tokens

    return build


def _recurrent(layer: Callable[[], keras.layers.Layer]) -> Callable[[], tuple[keras.Model, np.ndarray]]:
    def build() -> tuple[keras.Model, np.ndarray]:
        inputs = _seq_input()
        x = np.random.default_rng(0).standard_normal((BATCH, STEPS, FEATURES)).astype(np.float32)
        return keras.Model(inputs, layer()(inputs)), x

    return build


def _conv_lstm() -> tuple[keras.Model, np.ndarray]:
    inputs = keras.Input(shape=(None, 32, 32, 8), name="x")
    outputs = L.ConvLSTM2D(16, 3, padding="same", return_sequences=True)(inputs)
    x = np.random.default_rng(0).standard_normal((4, 10, 32, 32, 8)).astype(np.float32)
    return keras.Model(inputs, outputs), x


CONFIGS: dict[str, Callable[[], tuple[keras.Model, np.ndarray]]] = {
    "simple_rnn": _recurrent(lambda: L.SimpleRNN(UNITS, return_sequences=True)),
    "gru_reset_after_false": _recurrent(lambda: L.GRU(UNITS, reset_after=False, return_sequences=True)),
    "gru_reset_after_true": _recurrent(lambda: L.GRU(UNITS, return_sequences=True)),
    "lstm": _recurrent(lambda: L.LSTM(UNITS, return_sequences=True)),
    "lstm_hard_sigmoid": _recurrent(
        lambda: L.LSTM(UNITS, recurrent_activation="hard_sigmoid", return_sequences=True)
    ),
    "lstm_go_backwards": _recurrent(lambda: L.LSTM(UNITS, go_backwards=True, return_sequences=True)),
    "bidirectional_lstm": _recurrent(lambda: L.Bidirectional(L.LSTM(UNITS, return_sequences=True))),
    "stacked_cells": _recurrent(
        lambda: L.RNN(L.StackedRNNCells([L.LSTMCell(UNITS), L.GRUCell(UNITS)]), return_sequences=True)
    ),
    "embedding_mask_lstm_back_padding": _masked("post"),
    "embedding_mask_lstm_front_padding": _masked("pre"),
    "conv_lstm2d": _conv_lstm,
}


@dataclass
class Row:
    config: str
    seqserve_ms: float | None = None
    tf2onnx_ms: float | None = None
    seqserve_1t_ms: float | None = None
    tf2onnx_1t_ms: float | None = None
    seqserve_max_diff: float | None = None
    tf2onnx_max_diff: float | None = None
    tf2onnx_has_loop: bool | None = None
    seqserve_ops: str = ""
    error: str = ""

    @property
    def speedup(self) -> float | None:
        if self.seqserve_ms and self.tf2onnx_ms:
            return self.tf2onnx_ms / self.seqserve_ms
        return None


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(session: ort.InferenceSession, x: np.ndarray) -> dict[str, np.ndarray]:
    """The model input, plus zeros for any recurrent-state inputs (seqserve graphs have them)."""
    feeds = {}
    for i, spec in enumerate(session.get_inputs()):
        if i == 0:
            feeds[spec.name] = x.astype(np.int64 if "int64" in spec.type else np.float32)
        else:
            shape = [x.shape[0] if not isinstance(d, int) else d for d in spec.shape]
            feeds[spec.name] = np.zeros(shape, np.float32)
    return feeds


def _time_pair(a: Path, b: Path, x: np.ndarray, threads: int, repeat: int) -> tuple[float, float]:
    """Median milliseconds of each graph, runs interleaved so that machine noise hits both alike."""
    sessions = [_session(a, threads), _session(b, threads)]
    feeds = [_feeds(s, x) for s in sessions]
    times: list[list[float]] = [[], []]
    for i in range(repeat + 3):
        for k in (0, 1) if i % 2 == 0 else (1, 0):
            start = time.perf_counter()
            sessions[k].run(None, feeds[k])
            if i >= 3:  # the first runs warm up allocators and caches
                times[k].append((time.perf_counter() - start) * 1000)
    return float(np.median(times[0])), float(np.median(times[1]))


def _first_output(path: Path, x: np.ndarray) -> np.ndarray:
    session = _session(path, 0)
    return session.run([session.get_outputs()[0].name], _feeds(session, x))[0]


def prepare(root: Path, names: list[str]) -> None:
    for name in tqdm(names, desc="build + seqserve export", unit="model"):
        case = root / name
        case.mkdir()
        keras.utils.set_random_seed(0)
        model, x = CONFIGS[name]()
        model.save(case / "model.keras")
        np.save(case / "x.npy", x)
        np.save(case / "keras.npy", model.predict(x, batch_size=len(x), verbose=0))
        try:
            export_model(case / "model.keras", name=name, store=case / "store", version=1, progress=False)
        except Exception as e:
            (case / "seqserve.error").write_text(f"{type(e).__name__}: {e}")


def measure(case: Path, repeat: int) -> Row:
    row = Row(case.name)
    ours, theirs = case / "store" / case.name / "1" / "model.onnx", case / "tf2onnx.onnx"
    for label in ("seqserve", "tf2onnx"):
        error = case / f"{label}.error"
        if error.exists():
            row.error += f"{label}: {error.read_text().strip().splitlines()[-1]} "
    if row.error:
        return row
    x, expected = np.load(case / "x.npy"), np.load(case / "keras.npy")
    row.seqserve_max_diff = float(np.abs(_first_output(ours, x) - expected).max())
    row.tf2onnx_max_diff = float(np.abs(_first_output(theirs, x) - expected).max())
    row.tf2onnx_has_loop = any(n.op_type == "Loop" for n in onnx.load(str(theirs)).graph.node)
    row.seqserve_ops = ",".join(sorted(_recurrent_ops(onnx.load(str(ours)))))
    row.seqserve_ms, row.tf2onnx_ms = _time_pair(ours, theirs, x, 0, repeat)
    row.seqserve_1t_ms, row.tf2onnx_1t_ms = _time_pair(ours, theirs, x, 1, repeat)
    return row


def _recurrent_ops(model: onnx.ModelProto) -> set[str]:
    """The ops that carry the recurrence, also inside If branches and model-local functions."""
    found: set[str] = set()
    graphs = [model.graph]
    nodes = [n for f in model.functions for n in f.node]
    while graphs:
        nodes.extend(graphs.pop().node)
        while nodes:
            node = nodes.pop()
            if node.op_type in {"LSTM", "GRU", "RNN", "Scan", "Loop", "If"} or node.domain == "seqserve":
                found.add(node.op_type)
            for attribute in node.attribute:
                graphs.extend([attribute.g] if attribute.HasField("g") else list(attribute.graphs))
    return found


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def report(rows: list[Row], out: Path, machine: dict[str, str]) -> None:
    out.with_suffix(".json").write_text(
        json.dumps({"machine": machine, "rows": [asdict(r) | {"speedup": r.speedup} for r in rows]}, indent=2)
    )
    lines = [
        f"# seqserve export vs tf2onnx, ONNX Runtime CPU ({machine['cpu']}, {machine['cores']} cores)",
        "",
        f"onnxruntime {machine['onnxruntime']}, keras {machine['keras']}; median of interleaved runs. "
        "`x faster` = tf2onnx time / seqserve time with default threads.",
        "",
        "| config | seqserve ms | tf2onnx ms | x faster | 1-thread seqserve | 1-thread tf2onnx | tf2onnx Loop |"
        " seqserve form | max diff seqserve / tf2onnx |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.config} | error: {r.error.strip()} |||||||")
            continue
        lines.append(
            f"| {r.config} | {_fmt(r.seqserve_ms)} | {_fmt(r.tf2onnx_ms)} | {_fmt(r.speedup)} | "
            f"{_fmt(r.seqserve_1t_ms)} | {_fmt(r.tf2onnx_1t_ms)} | {'yes' if r.tf2onnx_has_loop else 'no'} | "
            f"{r.seqserve_ops} | {_fmt(r.seqserve_max_diff, '.1e')} / {_fmt(r.tf2onnx_max_diff, '.1e')} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    _plot(rows, out.with_suffix(".png"), machine)


def _plot(rows: list[Row], path: Path, machine: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.speedup]
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(done) + 1.5))
    ys = np.arange(len(done))
    ax.barh(ys - 0.2, [r.tf2onnx_ms for r in done], 0.4, label="tf2onnx", color="#bbbbbb")
    ax.barh(ys + 0.2, [r.seqserve_ms for r in done], 0.4, label="seqserve", color="#3a7bd5")
    for y, r in zip(ys, done, strict=True):
        ax.text(max(r.tf2onnx_ms, r.seqserve_ms) * 1.02, y, f"{r.speedup:.2f}x", va="center", fontsize=8)
    ax.set_yticks(ys, [r.config for r in done])
    ax.invert_yaxis()
    ax.set_xlabel("ONNX Runtime CPU, median ms per run (lower is better)")
    ax.set_title(f"seqserve export vs tf2onnx — {machine['cpu']}, {machine['cores']} cores")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--only", nargs="*", default=list(CONFIGS))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "export_vs_tf2onnx-cpu")
    args = parser.parse_args()
    if not TF_PYTHON.exists():
        print(f"missing {TF_PYTHON}: run `bash bench/setup_tf_env.sh` first", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepare(root, args.only)
        subprocess.run([str(TF_PYTHON), str(HERE / "tf2onnx_convert.py"), str(root)], check=True)
        rows = [measure(case, args.repeat) for case in tqdm(sorted(root.iterdir()), desc="timing", unit="model")]
    machine = {
        "cpu": _cpu_name(),
        "cores": str(os.cpu_count()),
        "onnxruntime": ort.__version__,
        "keras": keras.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report(rows, args.out, machine)
    print(args.out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
