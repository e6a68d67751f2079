"""The model store: finds `<root>/<name>/<version>/` directories, loads them, and follows changes.

A version directory counts once it holds both `model.onnx` and `signature.json`; the exporter
writes into a hidden temporary directory and renames it into place, so a scan never sees half a
version. Rescanning loads versions that appeared and drops those that disappeared, without a restart.

A session stays on the version it started on (state shapes can differ between versions), so a
version removed from disk keeps running for its sessions for a grace period (`drain_seconds`, the
sequence idle timeout): new requests no longer see it, sessions already on it finish on it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from seqserve.errors import ModelNotFound, ModelNotReady, SeqserveError
from seqserve.store.model_config import ModelConfig
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
    config: ModelConfig = field(default_factory=ModelConfig)

    @property
    def ready(self) -> bool:
        return self.state == READY


def is_version_dir(path: Path) -> bool:
    return path.is_dir() and path.name.isdigit() and (path / MODEL_FILE).is_file() and (path / SIGNATURE_FILE).is_file()


class ModelStore:
    def __init__(self, root: Path, loader: Loader, drain_seconds: float = 0.0) -> None:
        self.root = Path(root)
        self._loader = loader
        self.drain_seconds = drain_seconds
        self._models: dict[str, dict[int, ModelVersion]] = {}
        # Removed from disk, still serving the sessions pinned to them: version -> (entry, until).
        self._draining: dict[tuple[str, int], tuple[ModelVersion, float]] = {}
        self._scan_lock = threading.Lock()

    def scan(self) -> None:
        """Brings the loaded set in line with the directory: load new versions, drop removed ones."""
        with self._scan_lock:
            found = self._find_versions()
            now = time.monotonic()
            draining = {key: value for key, value in self._draining.items() if value[1] > now}
            current = {(n, v): mv for n, vs in self._models.items() for v, mv in vs.items()}
            current.update({key: entry for key, (entry, _) in draining.items() if key not in current})
            updated: dict[str, dict[int, ModelVersion]] = {}
            configs: dict[str, ModelConfig | SeqserveError] = {}
            for (name, version), path in sorted(found.items()):
                if name not in configs:
                    configs[name] = self._read_config(name)
                entry = current.get((name, version)) or self._load(name, version, path)
                updated.setdefault(name, {})[version] = self._configured(entry, configs[name])
                draining.pop((name, version), None)  # back on disk: serving again
            for key in current.keys() - found.keys() - draining.keys():
                entry = current[key]
                if self.drain_seconds > 0 and entry.ready:
                    log.info("model %s version %d removed from the store; its sessions may finish for %g s", *key,
                             self.drain_seconds)  # fmt: skip
                    draining[key] = (entry, now + self.drain_seconds)
                else:
                    log.info("model %s version %d removed from the store; unloaded", *key)
            # One assignment each, so readers see the old set or the new one, never a mix.
            self._models, self._draining = updated, draining

    def _read_config(self, name: str) -> ModelConfig | SeqserveError:
        try:
            return ModelConfig.read(self.root / name)
        except SeqserveError as e:
            log.error("model %s: %s", name, e)
            return e

    @staticmethod
    def _configured(entry: ModelVersion, config: ModelConfig | SeqserveError) -> ModelVersion:
        """The entry under the model's current config.yaml: unavailable while that file is broken,
        ready again once it is fixed (a version that failed to load stays unavailable)."""
        if isinstance(config, SeqserveError):
            return replace(entry, state=UNAVAILABLE, reason=str(config))
        if entry.model is None or (entry.ready and entry.config == config):
            return entry
        return replace(entry, config=config, state=READY, reason="")

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

    def pinned(self, name: str, version: int) -> ModelVersion:
        """The version a session runs on: a ready version, or one removed from disk but still draining."""
        entry = self._models.get(name, {}).get(version)
        if entry is None:
            draining = self._draining.get((name, version))
            if draining is None or draining[1] <= time.monotonic():
                raise ModelNotFound(
                    f"version {version} of model '{name}', which this session runs on, was removed from the store"
                )
            entry = draining[0]
        if not entry.ready:
            raise ModelNotReady(f"model '{name}' version {version} is not ready: {entry.reason}")
        return entry

    def get_ready(self, name: str, version: str | None = None) -> ModelVersion:
        mv = self.find(name, version)
        if not mv.ready:
            raise ModelNotReady(f"model '{name}' version {mv.version} is not ready: {mv.reason}")
        return mv
