"""A large JSON body decoded in a worker process (seqserve.rest.decode_offload): the same request,
or the same error, as decoding it inline; and a worker that crashes, hangs or answers garbage costs
that one request a 503 with Retry-After, never the server."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from seqserve.errors import InvalidInput, ModelNotReady
from seqserve.rest import decode_offload
from seqserve.rest.decode_offload import DecodeFailed, _decode_in_worker, decode_body

STAND_INS = Path(__file__).parent / "worker_stand_ins"


def _body(values: str, shape: list[int]) -> bytes:
    head = json.dumps({"id": "big", "inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": []}]})
    return head.replace('"data": []', f'"data": [{values}]').encode()


def _large_body() -> bytes:
    rng = np.random.default_rng(0)
    values = rng.standard_normal(3 * 100_000).astype(np.float32)
    return _body(",".join(repr(float(v)) for v in values), [3, 100_000, 1])


def test_the_worker_decodes_the_same_request_as_inline() -> None:
    body = _large_body()
    assert len(body) > decode_offload.INLINE_JSON_BYTES
    inline = decode_body(body, None, "m", None)
    worked = _decode_in_worker(body, None, "m", None)
    assert not isinstance(worked, DecodeFailed), worked
    assert worked.id == inline.id == "big"
    assert [t.name for t in worked.inputs] == [t.name for t in inline.inputs] == ["x"]
    for got, want in zip(worked.inputs, inline.inputs, strict=True):
        assert got.datatype == want.datatype and got.data.dtype == want.data.dtype
        assert np.array_equal(got.data, want.data)
        assert got.data.flags.writeable  # in memory of its own, not a view of a read-only pickle


def test_the_worker_returns_the_same_error_as_inline() -> None:
    body = _body("1.5," * 400_000 + '"a"', [1, 400_001, 1])
    result = _decode_in_worker(body, None, "m", None)
    assert isinstance(result, DecodeFailed) and isinstance(result.error, InvalidInput)
    assert "input 'x'" in str(result.error) and result.request_id == "big"


@pytest.mark.parametrize(
    ("module", "timeout", "logged"),
    [
        ("no_such_module_anywhere", 60.0, "No module named"),
        ("hangs", 1.0, "exit code -9"),
        ("garbage", 60.0, "invalid load key"),
    ],
    ids=["crashes", "hangs", "answers garbage"],
)
def test_a_failed_worker_costs_the_request_a_retry(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, module: str, timeout: float, logged: str
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(STAND_INS))
    monkeypatch.setattr(decode_offload, "WORKER_MODULE", module)
    monkeypatch.setattr(decode_offload, "WORKER_TIMEOUT", timeout)
    with caplog.at_level(logging.WARNING, logger="seqserve.rest.decode_offload"):
        result = _decode_in_worker(_large_body(), None, "m", None)
    assert isinstance(result, DecodeFailed) and isinstance(result.error, ModelNotReady)
    assert result.error.http_status == 503 and "send it again" in str(result.error)
    assert logged in caplog.text, caplog.text
