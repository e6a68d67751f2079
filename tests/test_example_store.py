"""The committed example store is what the README says it is, and every model in it serves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from seqserve.config import Settings
from seqserve.inference import InferRequest, Tensor
from seqserve.server import build_dataplane

STORE = Path(__file__).resolve().parents[1] / "model_store"

# name -> (input name, datatype, feature shape, output name, stateful), as the README's table says
EXAMPLES = {
    "chars": ("chars", "FP32", [17], "next_char", True),
    "sensor": ("reading", "FP32", [1], "next_reading", True),
    "frames": ("frames", "FP32", [16, 16, 1], "next_frames", True),
    "sentiment": ("tokens", "INT64", [], "positive", False),
}


@pytest.mark.parametrize("name", list(EXAMPLES))
async def test_each_example_model_serves_as_documented(name: str) -> None:
    input_name, datatype, features, output_name, stateful = EXAMPLES[name]
    plane = build_dataplane(Settings(store=STORE, device="cpu"))
    try:
        assert plane.catalog.model_ready(name)
        signature = plane.store.get_ready(name).signature
        assert signature is not None and signature.stateful is stateful
        assert [(t.name, t.datatype, t.shape[2:]) for t in signature.inputs] == [(input_name, datatype, features)]
        data = np.ones([2, 3, *features], dtype=np.int64 if datatype == "INT64" else np.float32)
        parameters = {"sequence_id": 1, "sequence_start": True} if stateful else {}
        response = await plane.infer(
            InferRequest(name, inputs=[Tensor(input_name, datatype, data)], parameters=parameters)
        )
        assert response.outputs[0].name == output_name
        assert np.isfinite(response.outputs[0].data).all()
    finally:
        await plane.close()
