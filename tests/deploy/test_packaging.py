"""The container image, the compose stack and its monitoring say what the project does, and stay so.

No Docker engine runs here, so what can be checked without one is: Debian's docker-compose parses
and merges the compose files; the image installs seqserve the way the README does; the load
balancer of the compose stack is the one the replica tests run; every metric the Grafana dashboard
plots is one the server really exports.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tomllib
import yaml

from helpers.balancer import TEMPLATE, VARIABLES
from helpers.onnx_models import write_lstm_model
from seqserve.config import Settings
from seqserve.errors import SeqserveError
from seqserve.inference import InferRequest, Tensor
from seqserve.server import build_dataplane

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _compose(*files: str) -> dict:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed (Debian: apt-get install docker-compose; `make test` does it)"
    args = [arg for name in files for arg in ("-f", str(ROOT / name))]
    done = subprocess.run([binary, *args, "config"], capture_output=True, text=True, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def _stages() -> dict[str, str]:
    """Each stage of the Dockerfile by its name: its lines from FROM to the next FROM."""
    parts = re.split(r"^FROM ", DOCKERFILE, flags=re.MULTILINE)[1:]
    return {re.search(r" AS (\w+)", part.splitlines()[0]).group(1): part for part in parts}  # type: ignore[union-attr]


def test_compose_runs_two_replicas_sharing_one_redis_behind_the_balancer() -> None:
    config = _compose("docker-compose.yml")
    services = config["services"]
    replicas = sorted(name for name in services if name.startswith("seqserve-"))
    assert replicas == ["seqserve-1", "seqserve-2"]
    for name in replicas:
        replica = services[name]
        assert replica["environment"]["SEQSERVE_SESSIONS"] == "redis://redis:6379/0"
        assert replica["read_only"] is True and replica["build"]["target"] == "cpu"
    assert "noeviction" in services["redis"]["command"]
    balancer = services["lb"]
    assert {p["target"] for p in balancer["ports"]} == {8000, 8001}
    for variable, port in (("SEQSERVE_HTTP_SERVERS", 8000), ("SEQSERVE_GRPC_SERVERS", 8001)):
        assert re.findall(r"server ([\w-]+):(\d+)", balancer["environment"][variable]) == [
            (r, str(port)) for r in replicas
        ]


def test_the_compose_balancer_is_the_template_the_replica_tests_run() -> None:
    balancer = _compose("docker-compose.yml")["services"]["lb"]
    mounted = {Path(v.split(":")[0]).resolve() for v in balancer["volumes"]}
    assert TEMPLATE.resolve() in mounted
    assert set(VARIABLES) <= set(balancer["environment"])
    assert set(re.findall(r"\$\{(\w+)\}", TEMPLATE.read_text())) == set(VARIABLES)


def test_the_gpu_override_runs_the_cuda_image_on_a_gpu() -> None:
    services = _compose("docker-compose.yml", "docker-compose.gpu.yml")["services"]
    for name in ("seqserve-1", "seqserve-2"):
        replica = services[name]
        assert replica["build"]["target"] == "cuda" and replica["environment"]["SEQSERVE_DEVICE"] == "cuda"
        assert replica["environment"]["SEQSERVE_SESSIONS"] == "redis://redis:6379/0"  # merged, not replaced
        (device,) = replica["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_prometheus_scrapes_every_replica_of_the_compose_stack() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "monitoring" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    targets = job["static_configs"][0]["targets"]
    replicas = sorted(n for n in _compose("docker-compose.yml")["services"] if n.startswith("seqserve-"))
    assert targets == [f"{name}:8000" for name in replicas] and job["metrics_path"] == "/metrics"


def test_the_image_installs_seqserve_as_the_readme_does() -> None:
    """`make serve` (the README's first command) pip-installs the project, no extras: the image must
    install the same thing, so the dependency list lives in pyproject.toml alone."""
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -e .\n" in makefile  # the serve set-up: the project, no extras
    assert "make serve" in (ROOT / "README.md").read_text()
    stages = _stages()
    assert set(stages) == {"cuda", "cpu"} and list(stages)[-1] == "cpu"  # cpu is the default target
    for name, stage in stages.items():
        installs = re.findall(r"pip install[^\n&\\]*", stage)
        assert installs[0].split() == ["pip", "install", "--no-compile", "."], (name, installs)
    # The CUDA image swaps onnxruntime for the `gpu` extra's package, read from pyproject.toml.
    assert PYPROJECT["project"]["optional-dependencies"]["gpu"][0].startswith("onnxruntime-gpu")
    assert "pip uninstall -y onnxruntime" in stages["cuda"] and '["optional-dependencies"]["gpu"]' in stages["cuda"]
    # The CPU image's Python satisfies requires-python.
    python = re.search(r"python:(\d+)\.(\d+)", stages["cpu"].splitlines()[0])
    required = re.search(r">=(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert python and required and tuple(map(int, python.groups())) >= tuple(map(int, required.groups()))


@pytest.mark.parametrize("stage", ["cpu", "cuda"])
def test_each_image_runs_unprivileged_with_a_health_check(stage: str) -> None:
    text = _stages()[stage]
    assert re.search(r"^USER 10001$", text, re.MULTILINE)
    assert "HEALTHCHECK" in text and "/v2/health/ready" in text
    assert 'ENTRYPOINT ["seqserve", "serve"]' in text and "EXPOSE 8000 8001" in text
    assert "COPY --chown=10001:10001 model_store /models" in text and "VOLUME /models" in text
    assert "SEQSERVE_STORE=/models" in text


def test_the_build_context_holds_what_the_image_copies() -> None:
    allowed = {
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    }
    copied = {
        source
        for stage in _stages().values()
        for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", stage, re.MULTILINE)
    }
    assert {name for sources in copied for name in sources.split()} <= allowed


async def test_every_metric_the_dashboard_plots_is_exported(tmp_path: Path) -> None:
    dashboard = json.loads((ROOT / "deploy" / "monitoring" / "grafana" / "dashboards" / "seqserve.json").read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries.append(dashboard["templating"]["list"][0]["query"])
    plotted = {name for q in queries for name in re.findall(r"\b(seqserve_\w+)", q)}
    write_lstm_model(tmp_path, "lstm", 1, stateful=True)
    plane = build_dataplane(Settings(store=tmp_path, device="cpu"))
    try:
        x = [Tensor("x", "FP32", np.zeros((1, 1, 3), np.float32))]
        await plane.infer(InferRequest("lstm", inputs=x, parameters={"sequence_id": 1, "sequence_start": True}))
        with pytest.raises(SeqserveError):
            await plane.infer(InferRequest("lstm", inputs=[]))
        await asyncio.sleep(0)
        exported = {line.split("{")[0].split(" ")[0] for line in plane.metrics.exposition().decode().splitlines()}
    finally:
        await plane.close()
    assert plotted and plotted <= exported, plotted - exported
