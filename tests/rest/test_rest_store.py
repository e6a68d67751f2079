"""What the REST API shows of a changing store (versions added and removed while serving) and `/metrics`."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.onnx_models import run_directly, write_lstm_model

X = np.random.default_rng(3).standard_normal((1, 4, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This module's own store (it adds and removes versions), with version 1 of `lstm`."""
    root = tmp_path_factory.mktemp("changing") / "models"
    write_lstm_model(root, "lstm", 1, seed=1)
    return root


@pytest.fixture(scope="module")
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        yield client


def infer_last(http: httpx.Client, path: str = "/v2/models/lstm/infer") -> httpx.Response:
    tensor = {"name": "x", "shape": list(X.shape), "datatype": "FP32", "data": X.ravel().tolist()}
    return http.post(path, json={"inputs": [tensor], "outputs": [{"name": "last"}]})


def last_of(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array(response.json()["outputs"][0]["data"], dtype=np.float32).reshape(1, 4)


def eventually(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Waits for the store's rescan (every 0.2 s in tests) to make `condition` true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout}s: {condition.__doc__ or condition}")
        time.sleep(0.1)


def versions(http: httpx.Client) -> list[str]:
    return list(http.get("/v2/models/lstm").json()["versions"])


def test_a_version_copied_in_is_served_and_a_removed_one_is_not(
    http: httpx.Client, store: Path, tmp_path: Path
) -> None:
    v1 = last_of(infer_last(http))
    np.testing.assert_array_equal(v1, run_directly(store / "lstm" / "1", {"x": X})["last"])

    # Copied in under a hidden name and renamed into place, as `seqserve export` does.
    built = write_lstm_model(tmp_path, "lstm", 2, seed=2)
    shutil.copytree(built, store / "lstm" / ".incoming-2")
    (store / "lstm" / ".incoming-2").rename(store / "lstm" / "2")
    eventually(lambda: versions(http) == ["1", "2"])
    assert http.get("/v2/models/lstm/versions/2/ready").status_code == 200

    v2 = last_of(infer_last(http))
    np.testing.assert_array_equal(v2, run_directly(built, {"x": X})["last"])
    assert not np.array_equal(v1, v2)
    np.testing.assert_array_equal(last_of(infer_last(http, "/v2/models/lstm/versions/1/infer")), v1)

    shutil.rmtree(store / "lstm" / "2")
    eventually(lambda: versions(http) == ["1"])
    assert infer_last(http, "/v2/models/lstm/versions/2/infer").status_code == 404
    assert http.get("/v2/models/lstm/versions/2/ready").status_code == 404
    np.testing.assert_array_equal(last_of(infer_last(http)), v1)


def test_a_version_that_fails_to_load_answers_503_and_the_others_still_serve(
    http: httpx.Client, store: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "3"
    shutil.copytree(store / "lstm" / "1", broken)
    (broken / "model.onnx").write_bytes(b"this is not an ONNX file")
    broken.rename(store / "lstm" / "3")
    try:
        eventually(lambda: versions(http) == ["1", "3"])
        ready = http.get("/v2/models/lstm/versions/3/ready")
        assert ready.status_code == 503
        assert "not ready" in ready.json()["error"]
        refused = infer_last(http, "/v2/models/lstm/versions/3/infer")
        assert refused.status_code == 503
        assert "version 3 is not ready" in refused.json()["error"]
        assert http.get("/v2/models/lstm/ready").status_code == 200
        np.testing.assert_array_equal(last_of(infer_last(http)), run_directly(store / "lstm" / "1", {"x": X})["last"])
    finally:
        shutil.rmtree(store / "lstm" / "3")
    eventually(lambda: versions(http) == ["1"])


def sample(exposition: str, name: str, **labels: str) -> float:
    """The value of one labelled sample in a Prometheus text exposition (0 when not there yet)."""
    for family in text_string_to_metric_families(exposition):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0


def test_metrics_count_requests_and_failures_per_model(http: httpx.Client) -> None:
    before = http.get("/metrics").text
    for _ in range(3):
        last_of(infer_last(http))
    bad = {"inputs": [{"name": "x", "shape": [1, 1, 2], "datatype": "FP32", "data": [0.0, 0.0]}]}
    assert http.post("/v2/models/lstm/infer", json=bad).status_code == 400

    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text

    def increase(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert increase("seqserve_inference_requests_total", model="lstm", version="1") == 4
    assert increase("seqserve_inference_failures_total", model="lstm", version="1", reason="InvalidInput") == 1
    assert increase("seqserve_inference_request_seconds_count", model="lstm", version="1") == 3
