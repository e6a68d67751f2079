"""On a machine with onnxruntime-gpu: the server with `--device cuda` serves every example model.

Outputs are compared with ONNX Runtime's CPU provider on the same inputs; TF32 is off by default,
so they must agree to 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from helpers.server import running_server
from seqserve.store.signature import MODEL_FILE, Signature

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        "CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs the CUDA execution provider"
    ),
]

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


def test_every_example_model_is_served_on_cuda_within_1e5_of_the_cpu(tmp_path: Path) -> None:
    import tritonclient.http as httpclient

    versions = sorted(p for p in EXAMPLE_STORE.glob("*/*") if (p / MODEL_FILE).is_file())
    assert versions, "the example store is empty"
    rng = np.random.default_rng(0)
    with running_server(EXAMPLE_STORE, "--device", "cuda", log_dir=tmp_path) as server:
        client = httpclient.InferenceServerClient(server.http_url)
        for directory in versions:
            signature = Signature.read(directory)
            feeds = _example_inputs(signature, rng)
            inputs = []
            for name, value in feeds.items():
                tensor = httpclient.InferInput(name, list(value.shape), "INT64" if value.dtype == np.int64 else "FP32")
                tensor.set_data_from_numpy(value, binary_data=True)
                inputs.append(tensor)
            result = client.infer(directory.parent.name, inputs, model_version=directory.name)
            expected = _cpu_outputs(directory, signature, feeds)
            for name, value in expected.items():
                np.testing.assert_allclose(result.as_numpy(name), value, atol=1e-5, err_msg=f"{directory}: {name}")
