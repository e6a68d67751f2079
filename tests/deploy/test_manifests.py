"""The Kubernetes and KServe manifests users apply: rendered by kustomize, valid against the schemas
of Kubernetes and of the CRDs they use (vendored, offline), clean under checkov, and wired the way
the server needs (probes, shutdown timing, ports, the session store)."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ["cpu", "gpu", "production"]
TARGETS = {
    **{name: ROOT / "deploy" / "kubernetes" / "overlays" / name for name in OVERLAYS},
    "kserve": ROOT / "deploy" / "kserve",
}
CRDS = ROOT / "tests" / "fixtures" / "crds"
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
CHECKOV = ROOT / ".venv-tools" / "bin" / "checkov"


@cache
def _rendered(target: str) -> str:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not installed (its `kubectl kustomize` renders the manifests)"
    done = subprocess.run([kubectl, "kustomize", str(TARGETS[target])], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _documents(target: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(_rendered(target)) if doc]


def _one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


@cache
def _crd_schemas() -> dict[tuple[str, str, str], dict[str, Any]]:
    """(group, version, kind) -> openAPIV3Schema, from tests/fixtures/crds (see its README)."""
    schemas = {}
    for path in CRDS.glob("*.json.gz"):
        crd = json.loads(gzip.decompress(path.read_bytes()))
        for version, schema in crd["versions"].items():
            schemas[(crd["group"], version, crd["kind"])] = schema
    return schemas


@pytest.mark.parametrize("target", list(TARGETS))
def test_every_rendered_resource_is_valid_against_its_schema(target: str) -> None:
    docs = _documents(target)
    assert docs
    for doc in docs:
        group, _, version = doc["apiVersion"].rpartition("/")
        crd = _crd_schemas().get((group, version, doc["kind"]))
        what = f"{doc['kind']}/{doc['metadata']['name']}"
        if crd is not None:
            jsonschema.validate(doc, crd)  # raises, naming the field, if invalid
            continue
        builtin = "." not in group or group.endswith(".k8s.io")
        assert builtin, f"{what}: a custom resource with no vendored CRD schema in {CRDS}"
        for kubernetes in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, kubernetes, strict=True)


def test_a_broken_resource_is_caught_by_the_validation() -> None:
    """The validation above has teeth: a typo in a Deployment and in an InferenceService fail."""
    deployment = _one(_documents("cpu"), "Deployment", "seqserve")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    service = _one(_documents("kserve"), "InferenceService", "seqserve")
    service["spec"]["predictor"]["minReplicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(service, _crd_schemas()[("serving.kserve.io", "v1beta1", "InferenceService")])


def test_checkov_passes_on_the_dockerfile_and_every_manifest(tmp_path: Path) -> None:
    assert CHECKOV.exists(), "checkov is not installed (`make test` puts it in .venv-tools)"
    files = [ROOT / "Dockerfile"]
    for target in TARGETS:
        files.append(tmp_path / f"{target}.yaml")
        files[-1].write_text(_rendered(target))
    command = [str(CHECKOV), "--framework", "kubernetes", "dockerfile", "--skip-download", "-o", "json"]
    for path in files:
        command += ["-f", str(path)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}
    for report in reports:
        failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
        assert not failed, f"{report['check_type']}: {failed}"
        for skipped in report["results"]["skipped_checks"]:
            assert skipped["check_result"].get("suppress_comment"), f"{skipped['check_id']} skipped without a reason"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_deployment_is_wired_as_the_server_needs(overlay: str) -> None:
    docs = _documents(overlay)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"seqserve"}
    deployment = _one(docs, "Deployment", "seqserve")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 8000, "grpc": 8001}
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
    secure = container["securityContext"]
    assert secure["readOnlyRootFilesystem"] and not secure["allowPrivilegeEscalation"]
    assert secure["capabilities"]["drop"] == ["ALL"] and pod["securityContext"]["runAsNonRoot"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/models", "/tmp"}
    # The pause before SIGTERM plus the server's own grace fit in the pod's termination grace period.
    settings = _one(docs, "ConfigMap", "seqserve")["data"]
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pause + float(settings["SEQSERVE_SHUTDOWN_GRACE"]) < pod["terminationGracePeriodSeconds"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        selector = _one(docs, kind, "seqserve")["spec"]["selector"]
        assert (selector.get("matchLabels") or selector).items() <= labels.items(), kind
    service = _one(docs, "Service", "seqserve")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"http": 8000, "grpc": 8001}
    assert _one(docs, "HorizontalPodAutoscaler", "seqserve")["spec"]["scaleTargetRef"]["name"] == "seqserve"
    assert _one(docs, "ServiceMonitor", "seqserve")["spec"]["endpoints"][0]["path"] == "/metrics"


def test_the_cpu_and_gpu_overlays_bundle_a_redis_that_evicts_nothing() -> None:
    for overlay in ("cpu", "gpu"):
        docs = _documents(overlay)
        redis = _one(docs, "StatefulSet", "seqserve-redis")["spec"]["template"]["spec"]["containers"][0]
        assert "noeviction" in redis["args"] and "appendonly" in " ".join(redis["args"])
        assert _one(docs, "ConfigMap", "seqserve")["data"]["SEQSERVE_SESSIONS"] == "redis://seqserve-redis:6379/0"
        policy = _one(docs, "NetworkPolicy", "seqserve-redis")["spec"]
        assert policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "seqserve"}


def test_the_gpu_overlay_asks_for_a_gpu_and_the_cuda_device() -> None:
    container = _one(_documents("gpu"), "Deployment", "seqserve")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert {"name": "SEQSERVE_DEVICE", "value": "cuda"} in container["env"]
    assert container["image"].endswith("cuda")


def test_the_production_overlay_reads_a_managed_redis_url_from_a_secret_file() -> None:
    docs = _documents("production")
    assert not [d for d in docs if d["metadata"]["name"] == "seqserve-redis"]
    assert "SEQSERVE_SESSIONS" not in _one(docs, "ConfigMap", "seqserve")["data"]
    pod = _one(docs, "Deployment", "seqserve")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["redis-url"] == "/run/secrets/seqserve"  # seqserve.cli.SECRETS_DIR
    (volume,) = [v for v in pod["volumes"] if v["name"] == "redis-url"]
    assert volume["secret"]["items"] == [{"key": "url", "path": "seqserve_sessions"}]


def test_kserve_exposes_rest_and_grpc_through_two_runtimes_on_one_redis() -> None:
    docs = _documents("kserve")
    ports = {}
    for runtime in (d for d in docs if d["kind"] == "ServingRuntime"):
        (container,) = runtime["spec"]["containers"]
        (port,) = container["ports"]  # KServe routes one port per predictor
        ports[runtime["metadata"]["name"]] = (port["name"], port["containerPort"])
        args = container["args"]
        assert args[args.index("--http-port") + 1] == "8080" and args[args.index("--grpc-port") + 1] == "8081"
        assert {"name": "SEQSERVE_SESSIONS", "value": "redis://seqserve-redis:6379/0"} in container["env"]
    assert ports == {"seqserve": ("http1", 8080), "seqserve-grpc": ("h2c", 8081)}
    services = {d["metadata"]["name"]: d["spec"]["predictor"]["model"] for d in docs if d["kind"] == "InferenceService"}
    assert {name: model["runtime"] for name, model in services.items()} == {
        "seqserve": "seqserve",
        "seqserve-grpc": "seqserve-grpc",
    }
    assert {model["protocolVersion"] for model in services.values()} == {"v2", "grpc-v2"}
