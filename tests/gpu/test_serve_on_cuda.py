"""On a machine with onnxruntime-gpu: the server with `--device cuda` serves every example model on the GPU.

Outputs are compared with ONNX Runtime's CPU provider on the same inputs; TF32 is off by default,
so they must agree to 1e-5. Agreeing with the CPU proves nothing about the GPU (a model ORT quietly
ran on the CPU would agree too), so the server's own placement report (`seqserve_model_nodes` in
/metrics, read from a profiled run) must show every compute node of every model on CUDA.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from helpers.server import running_server
from seqserve.runtime.placement import COMPUTE_OPS
from seqserve.runtime.providers import CUDA
from seqserve.store.signature import MODEL_FILE, Signature

EXAMPLE_STORE = Path(__file__).resolve().parents[2] / "model_store"


def _example_inputs(signature: Signature, rng: np.random.Generator) -> dict[str, np.ndarray]:
    feeds = {}
    for spec in signature.inputs:
        shape = [2 if i == 0 else (4 if d < 0 else d) for i, d in enumerate(spec.shape)]
        if spec.datatype == "INT64":
            feeds[spec.name] = rng.integers(0, 10, shape).astype(np.int64)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _cpu_outputs(directory: Path, signature: Signature, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(directory / MODEL_FILE), providers=["CPUExecutionProvider"])
    batch = next(iter(feeds.values())).shape[0]
    full = dict(feeds)
    for s in signature.states:
        full[s.input] = np.zeros([batch, *s.shape[1:]], dtype=np.float32)
    names = [o.name for o in signature.outputs]
    return dict(zip(names, session.run(names, full), strict=True))


def _infer(base: str, model: str, version: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A V2 JSON request with httpx (the GPU machine has no tritonclient)."""
    inputs = [
        {
            "name": k,
            "shape": list(v.shape),
            "datatype": "INT64" if v.dtype == np.int64 else "FP32",
            "data": v.ravel().tolist(),
        }
        for k, v in feeds.items()
    ]
    response = httpx.post(f"{base}/v2/models/{model}/versions/{version}/infer", json={"inputs": inputs}, timeout=60)
    assert response.status_code == 200, response.text
    return {o["name"]: np.array(o["data"], np.float32).reshape(o["shape"]) for o in response.json()["outputs"]}


def test_every_example_model_is_served_on_cuda_within_1e5_of_the_cpu(tmp_path: Path) -> None:
    versions = sorted(p for p in EXAMPLE_STORE.glob("*/*") if (p / MODEL_FILE).is_file())
    assert versions, "the example store is empty"
    rng = np.random.default_rng(0)
    # REST only: the GPU machine's Python needs nothing of the gRPC stack then.
    with running_server(EXAMPLE_STORE, "--device", "cuda", "--grpc-port", "0", log_dir=tmp_path) as server:
        base = f"http://{server.http_url}"
        for directory in versions:
            signature = Signature.read(directory)
            feeds = _example_inputs(signature, rng)
            result = _infer(base, directory.parent.name, directory.name, feeds)
            expected = _cpu_outputs(directory, signature, feeds)
            for name, value in expected.items():
                np.testing.assert_allclose(result[name], value, atol=1e-5, err_msg=f"{directory}: {name}")
        placed = _placement(httpx.get(f"{base}/metrics").text)
    for directory in versions:
        model = (directory.parent.name, directory.name)
        on_cuda = {op for (m, v, provider, op) in placed if (m, v) == model and provider == CUDA}
        on_cpu = {op for (m, v, provider, op) in placed if (m, v) == model and provider != CUDA}
        assert on_cuda & COMPUTE_OPS, f"{model}: no compute node on CUDA ({sorted(on_cuda)})"
        assert not on_cpu & COMPUTE_OPS, f"{model}: compute nodes on the CPU: {sorted(on_cpu & COMPUTE_OPS)}"


def _placement(exposition: str) -> set[tuple[str, str, str, str]]:
    """(model, version, provider, op) of every `seqserve_model_nodes` series with a count."""
    placed = set()
    for line in exposition.splitlines():
        if line.startswith("seqserve_model_nodes{") and float(line.rsplit(" ", 1)[1]) > 0:
            labels = dict(part.split("=", 1) for part in line[line.index("{") + 1 : line.index("}")].split(","))
            values = {k: v.strip('"') for k, v in labels.items()}
            placed.add((values["model"], values["version"], values["provider"], values["op"]))
    return placed
