"""The model store: finds `<root>/<name>/<version>/` directories, loads them, and follows changes.

A version directory counts once it holds both `model.onnx` and `signature.json`; the exporter
writes into a hidden temporary directory and renames it into place, so a scan never sees half a
version. Rescanning loads versions that appeared and drops those that disappeared, without a restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqserve.errors import ModelNotFound, ModelNotReady, SeqserveError
from seqserve.store.signature import MODEL_FILE, SIGNATURE_FILE, Signature

log = logging.getLogger(__name__)

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"

# Builds the runnable model of a version; injected so the store does not depend on the runtime.
Loader = Callable[[Path, Signature], Any]


@dataclass
class ModelVersion:
    name: str
    version: int
    path: Path
    state: str
    signature: Signature | None = None
    model: Any = None
    reason: str = ""

    @property
    def ready(self) -> bool:
        return self.state == READY


def is_version_dir(path: Path) -> bool:
    return path.is_dir() and path.name.isdigit() and (path / MODEL_FILE).is_file() and (
        path / SIGNATURE_FILE
    ).is_file()


class ModelStore:
    def __init__(self, root: Path, loader: Loader) -> None:
        self.root = Path(root)
        self._loader = loader
        self._models: dict[str, dict[int, ModelVersion]] = {}
        self._scan_lock = threading.Lock()

    def scan(self) -> None:
        """Brings the loaded set in line with the directory: load new versions, drop removed ones."""
        with self._scan_lock:
            found = self._find_versions()
            current = {(n, v): mv for n, vs in self._models.items() for v, mv in vs.items()}
            updated: dict[str, dict[int, ModelVersion]] = {}
            for (name, version), path in sorted(found.items()):
                entry = current.get((name, version)) or self._load(name, version, path)
                updated.setdefault(name, {})[version] = entry
            for key in current.keys() - found.keys():
                log.info("model %s version %d removed from the store; unloading", *key)
            # One assignment, so readers see the old set or the new one, never a mix.
            self._models = updated

    def _find_versions(self) -> dict[tuple[str, int], Path]:
        if not self.root.is_dir():
            log.warning("model store %s does not exist", self.root)
            return {}
        found = {}
        for model_dir in self.root.iterdir():
            if not model_dir.is_dir() or model_dir.name.startswith("."):
                continue
            for version_dir in model_dir.iterdir():
                if is_version_dir(version_dir):
                    found[(model_dir.name, int(version_dir.name))] = version_dir
        return found

    def _load(self, name: str, version: int, path: Path) -> ModelVersion:
        try:
            signature = Signature.read(path)
            model = self._loader(path / MODEL_FILE, signature)
        except SeqserveError as e:
            log.error("model %s version %d failed to load: %s", name, version, e)
            return ModelVersion(name, version, path, UNAVAILABLE, reason=str(e))
        except Exception as e:  # a broken ONNX file must not take the server down
            log.exception("model %s version %d failed to load", name, version)
            return ModelVersion(name, version, path, UNAVAILABLE, reason=f"{type(e).__name__}: {e}")
        log.info("model %s version %d loaded from %s", name, version, path)
        return ModelVersion(name, version, path, READY, signature=signature, model=model)

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model the store knows, ready or not, lowest first."""
        try:
            versions = self._models[name]
        except KeyError:
            raise ModelNotFound(f"unknown model '{name}'") from None
        return [versions[v] for v in sorted(versions)]

    def find(self, name: str, version: str | None = None) -> ModelVersion:
        """The named version, or the highest ready one; raises if there is none."""
        versions = self.versions(name)
        if version:
            if not version.isdigit():
                raise ModelNotFound(f"model '{name}' has no version '{version}' (versions are positive integers)")
            for mv in versions:
                if mv.version == int(version):
                    return mv
            raise ModelNotFound(f"model '{name}' has no version {version}")
        ready = [mv for mv in versions if mv.ready]
        return ready[-1] if ready else versions[-1]

    def get_ready(self, name: str, version: str | None = None) -> ModelVersion:
        mv = self.find(name, version)
        if not mv.ready:
            raise ModelNotReady(f"model '{name}' version {mv.version} is not ready: {mv.reason}")
        return mv
