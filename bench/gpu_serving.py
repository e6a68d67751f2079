"""Benchmark: many streaming sessions on a GPU, against bare ONNX Runtime on the same GPU and on the CPU.

Made for the device machine (`make gpu-check`), where there is no Keras: the model is a stacked
LSTM (256 -> 512 -> 512, the serving bench's shape) built directly as an ONNX graph with random
weights. In one process and one run it measures:

- bare ORT: one timestep per run at batch 1, 64, 512 and 4096, states fed back from the host each
  run, on the CUDA EP (seqserve's `OrtModel`, IO binding, TF32 off) and on the CPU EP (all cores);
- the data plane: N sessions (64, 512, 4096) each streaming single steps through `DataPlane.infer`
  with batching (a batch holds every session: max_batch_size N), the sessions' states on the host;
  steps/s, and the ratio to bare ORT on the same device at batch N.

    python bench/gpu_serving.py --out gpu-results            # on the GPU machine, ~3 minutes
    .venv/bin/python bench/gpu_serving.py --device cpu --seconds 1 --sessions 16 --batches 1 16   # a dry run here
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from seqserve.config import Settings
from seqserve.inference import InferRequest, Tensor
from seqserve.runtime.providers import resolve_providers
from seqserve.runtime.session import OrtModel, session_options
from seqserve.server import build_dataplane
from seqserve.store.signature import MODEL_FILE, Signature, StateSpec, TensorSpec

MODEL = "lstm"
FEATURES, UNITS, LAYERS = 256, 512, 2


def write_model(store: Path) -> Path:
    """x [N, T, 256] -> LSTM(512) -> LSTM(512) -> y [N, T, 512], each layer's h and c as state I/O."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Transpose", ["x"], ["t0"], perm=[1, 0, 2])]
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T", FEATURES])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T", UNITS])]
    states = []
    width = FEATURES
    for k in range(LAYERS):
        for name, shape in (
            (f"W{k}", (1, 4 * UNITS, width)),
            (f"R{k}", (1, 4 * UNITS, UNITS)),
            (f"B{k}", (1, 8 * UNITS)),
        ):
            inits.append(numpy_helper.from_array(rng.uniform(-0.1, 0.1, shape).astype(np.float32), name))
        for kind in ("h", "c"):
            states.append(
                StateSpec(
                    f"l{k}.{kind}",
                    f"state_in.l{k}.{kind}",
                    f"state_out.l{k}.{kind}",
                    "FP32",
                    [-1, UNITS],
                    f"l{k}",
                    kind,
                )
            )
            inputs.append(helper.make_tensor_value_info(f"state_in.l{k}.{kind}", TensorProto.FLOAT, ["N", UNITS]))
            outputs.append(helper.make_tensor_value_info(f"state_out.l{k}.{kind}", TensorProto.FLOAT, ["N", UNITS]))
            nodes.append(helper.make_node("Unsqueeze", [f"state_in.l{k}.{kind}", "axis0"], [f"{kind}0_{k}"]))
        nodes.append(helper.make_node("LSTM", [f"t{k}", f"W{k}", f"R{k}", f"B{k}", "", f"h0_{k}", f"c0_{k}"],
                                      [f"Y{k}", f"Yh{k}", f"Yc{k}"], hidden_size=UNITS))  # fmt: skip
        nodes.append(helper.make_node("Squeeze", [f"Y{k}", "axis1"], [f"t{k + 1}"]))
        nodes.append(helper.make_node("Squeeze", [f"Yh{k}", "axis0"], [f"state_out.l{k}.h"]))
        nodes.append(helper.make_node("Squeeze", [f"Yc{k}", "axis0"], [f"state_out.l{k}.c"]))
        width = UNITS
    nodes.append(helper.make_node("Transpose", [f"t{LAYERS}"], ["y"], perm=[1, 0, 2]))
    graph = helper.make_graph(nodes, "bench", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    directory = store / MODEL / "1"
    directory.mkdir(parents=True)
    onnx.save(model, str(directory / MODEL_FILE))
    Signature([TensorSpec("x", "FP32", [-1, -1, FEATURES])], [TensorSpec("y", "FP32", [-1, -1, UNITS])], states,
              stateful=True).write(directory)  # fmt: skip
    return directory


def bare(directory: Path, device: str, batch: int, seconds: float) -> dict[str, float]:
    """Single-timestep runs at `batch`, states fed back through the host, as the server does."""
    threads = 0 if device == "cpu" else 1  # the CPU EP gets every core; CUDA needs no CPU threads
    model = OrtModel(directory / MODEL_FILE, Signature.read(directory), resolve_providers(device),
                     session_options(threads, 1, False))  # fmt: skip
    feeds = {"x": np.random.default_rng(1).standard_normal((batch, 1, FEATURES), dtype=np.float32)}
    feeds.update(model.zero_states(batch))
    specs = model.signature.states
    for _ in range(3):
        model.run(feeds)
    runs, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        out = model.run(feeds)
        feeds.update({s.input: out[s.output] for s in specs})
        runs += 1
    return {"batch": batch, "ms_per_run": 1e3 * elapsed / runs, "steps_per_s": batch * runs / elapsed}


async def data_plane(store: Path, device: str, sessions: int, seconds: float) -> dict[str, float]:
    settings = Settings(store=store, device=device, max_batch_size=sessions, store_poll_seconds=0, max_sessions=10**6)
    plane = build_dataplane(settings)
    x = np.random.default_rng(2).standard_normal((1, 1, FEATURES), dtype=np.float32)
    stop, counts = False, [0] * sessions

    async def stream(index: int) -> None:
        parameters: dict[str, object] = {"sequence_id": index + 1, "sequence_start": True}
        while not stop:
            await plane.infer(InferRequest(MODEL, inputs=[Tensor("x", "FP32", x)], parameters=parameters))
            parameters = {"sequence_id": index + 1}
            counts[index] += 1

    tasks = [asyncio.create_task(stream(i)) for i in range(sessions)]
    await asyncio.sleep(min(2.0, seconds))  # warm-up: every session started, batches formed
    before, started = sum(counts), time.perf_counter()
    await asyncio.sleep(seconds)
    steps, elapsed = sum(counts) - before, time.perf_counter() - started
    stop = True
    await asyncio.gather(*tasks)
    await plane.close()
    return {"sessions": sessions, "steps_per_s": steps / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-results"))
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="the device under test")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per row")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 512, 4096])
    parser.add_argument("--sessions", type=int, nargs="+", default=[64, 512, 4096])
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = Path(tempfile.mkdtemp(prefix="seqserve-gpu-bench-"))
    directory = write_model(store)
    result: dict[str, object] = {"machine": platform.node(), "onnxruntime": ort.__version__,
                                 "providers": ort.get_available_providers(), "device": args.device}  # fmt: skip
    rows = []
    for batch in args.batches:
        row = {"batch": batch}
        for device in dict.fromkeys([args.device, "cpu"]):
            row[device] = bare(directory, device, batch, args.seconds)
        rows.append(row)
        print(json.dumps(row), flush=True)
    result["bare"] = rows
    bare_at = {row["batch"]: row[args.device]["steps_per_s"] for row in rows}
    served = []
    for n in args.sessions:
        row = asyncio.run(data_plane(store, args.device, n, args.seconds))
        reference = bare_at.get(n) or bare(directory, args.device, n, args.seconds)["steps_per_s"]
        row["vs_bare_ort_same_batch"] = row["steps_per_s"] / reference
        served.append(row)
        print(json.dumps(row), flush=True)
    result["data_plane"] = served
    (args.out / "gpu-serving.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [f"# GPU serving bench ({args.device}, onnxruntime {ort.__version__})", "",
             "| batch | " + " | ".join(f"{d} ms/run | {d} steps/s" for d in rows[0] if d != "batch") + " |",
             "|---|" + "---|---|" * (len(rows[0]) - 1)]  # fmt: skip
    for row in rows:
        cells = [f"{row[d]['ms_per_run']:.3f} | {row[d]['steps_per_s']:,.0f}" for d in row if d != "batch"]
        lines.append(f"| {row['batch']} | " + " | ".join(cells) + " |")
    lines += ["", "| sessions | data plane steps/s | vs bare ORT, same batch |", "|---|---|---|"]
    lines += [f"| {r['sessions']} | {r['steps_per_s']:,.0f} | {r['vs_bare_ort_same_batch']:.2f} |" for r in served]
    (args.out / "gpu-serving.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
