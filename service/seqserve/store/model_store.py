"""The model store: finds `<root>/<name>/<version>/` directories, loads them, and follows changes.

A version directory counts once it holds both `model.onnx` and `signature.json`; the exporter
writes into a hidden temporary directory and renames it into place, so a scan never sees half a
version. Rescanning loads versions that appeared and unloads those that disappeared, without a restart.

Loading a version makes its runner (the injected `Loader`, so the store does not depend on the
runtime); the store tells the runner when the model's config.yaml changes (`configure`) and when
the version is unloaded (`close`). Every runner the store made is closed exactly once: on unload,
or when the store itself is closed.

A session stays on the version it started on (state shapes can differ between versions), so a
version removed from disk drains: new requests no longer see it, sessions already on it finish on
it. It unloads when the session store says none is left on it, or once no session has stepped on
it for `drain_seconds` (the sequence idle timeout: any session left has expired by then).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from seqserve.errors import ModelNotFound, ModelNotReady, SeqserveError
from seqserve.store.model_config import ModelConfig
from seqserve.store.signature import MODEL_FILE, SIGNATURE_FILE, Signature

log = logging.getLogger(__name__)

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"


class Loaded(Protocol):
    """What a loader makes of a version: told of config.yaml changes, closed when the version goes."""

    def configure(self, config: ModelConfig) -> None: ...

    def close(self) -> None: ...


# (name, version, model file, signature, config.yaml) -> the version's runner.
Loader = Callable[[str, int, Path, Signature, ModelConfig], Loaded]
# Whether sessions remain on a version: True, False, or None when the session store cannot tell.
InUse = Callable[[str, int], "bool | None"]


@dataclass
class ModelVersion:
    name: str
    version: int
    path: Path
    state: str
    signature: Signature | None = None
    runner: Any = None
    reason: str = ""
    config: ModelConfig = field(default_factory=ModelConfig)

    @property
    def ready(self) -> bool:
        return self.state == READY


class _Drain:
    """A version removed from disk, serving its sessions until `until` (pushed on by every step)."""

    __slots__ = ("entry", "until")

    def __init__(self, entry: ModelVersion, until: float) -> None:
        self.entry, self.until = entry, until


def is_version_dir(path: Path) -> bool:
    return path.is_dir() and path.name.isdigit() and (path / MODEL_FILE).is_file() and (path / SIGNATURE_FILE).is_file()


def _unknown_use(name: str, version: int) -> bool | None:
    return None


class ModelStore:
    def __init__(self, root: Path, loader: Loader, drain_seconds: float = 0.0, in_use: InUse = _unknown_use) -> None:
        self.root = Path(root)
        self._loader = loader
        self.drain_seconds = drain_seconds
        self._in_use = in_use
        self._models: dict[str, dict[int, ModelVersion]] = {}
        self._draining: dict[tuple[str, int], _Drain] = {}
        self._scan_lock = threading.Lock()

    def scan(self) -> None:
        """Brings the loaded set in line with the directory: load new versions, unload removed ones."""
        with self._scan_lock:
            unloaded = self._rescan()
        for entry in unloaded:  # after the swap: no request finds them any more
            if entry.runner is not None:
                entry.runner.close()

    def _rescan(self) -> list[ModelVersion]:
        found = self._find_versions()
        now = time.monotonic()
        draining = dict(self._draining)
        current = {(n, v): mv for n, vs in self._models.items() for v, mv in vs.items()}
        updated: dict[str, dict[int, ModelVersion]] = {}
        configs: dict[str, ModelConfig | SeqserveError] = {}
        for (name, version), path in sorted(found.items()):
            if name not in configs:
                configs[name] = self._read_config(name)
            back = draining.pop((name, version), None)  # back on disk: serving again
            entry = current.get((name, version)) or (
                back.entry if back else self._load(name, version, path, configs[name])
            )
            updated.setdefault(name, {})[version] = self._configured(entry, configs[name])
        unloaded = []
        for key in current.keys() - found.keys():
            entry = current[key]
            if self.drain_seconds > 0 and entry.ready:
                log.info("model %s version %d removed from the store; its sessions may finish on it", *key)
                draining[key] = _Drain(entry, now + self.drain_seconds)
            else:
                log.info("model %s version %d removed from the store", *key)
                unloaded.append(entry)
        for key, drain in list(draining.items()):
            if drain.until <= now or self._in_use(*key) is False:
                del draining[key]
                unloaded.append(drain.entry)
        # One assignment each, so readers see the old set or the new one, never a mix.
        self._models, self._draining = updated, draining
        return unloaded

    def close(self) -> None:
        """Unloads every version (the server is stopping)."""
        with self._scan_lock:
            entries = [mv for vs in self._models.values() for mv in vs.values()]
            entries += [drain.entry for drain in self._draining.values()]
            self._models, self._draining = {}, {}
        for entry in entries:
            if entry.runner is not None:
                entry.runner.close()

    def _read_config(self, name: str) -> ModelConfig | SeqserveError:
        try:
            return ModelConfig.read(self.root / name)
        except SeqserveError as e:
            log.error("model %s: %s", name, e)
            return e

    @staticmethod
    def _configured(entry: ModelVersion, config: ModelConfig | SeqserveError) -> ModelVersion:
        """The entry under the model's current config.yaml: unavailable while that file is broken,
        ready again once it is fixed (a version that failed to load stays unavailable). Its runner
        is told of every change."""
        if isinstance(config, SeqserveError):
            return replace(entry, state=UNAVAILABLE, reason=str(config))
        if entry.runner is None or (entry.ready and entry.config == config):
            return entry
        if entry.config != config:
            entry.runner.configure(config)
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

    def _load(self, name: str, version: int, path: Path, config: ModelConfig | SeqserveError) -> ModelVersion:
        usable = config if isinstance(config, ModelConfig) else ModelConfig()  # the entry is unavailable anyway
        try:
            signature = Signature.read(path)
            runner = self._loader(name, version, path / MODEL_FILE, signature, usable)
        except SeqserveError as e:
            log.error("model %s version %d failed to load: %s", name, version, e)
            return ModelVersion(name, version, path, UNAVAILABLE, reason=str(e))
        except Exception as e:  # a broken ONNX file must not take the server down
            log.exception("model %s version %d failed to load", name, version)
            return ModelVersion(name, version, path, UNAVAILABLE, reason=f"{type(e).__name__}: {e}")
        log.info("model %s version %d loaded from %s", name, version, path)
        return ModelVersion(name, version, path, READY, signature=signature, runner=runner, config=usable)

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
            drain = self._draining.get((name, version))
            now = time.monotonic()
            if drain is None or drain.until <= now:
                raise ModelNotFound(
                    f"version {version} of model '{name}', which this session runs on, was removed from the store"
                )
            drain.until = now + self.drain_seconds  # a session still steps on it: keep it a while longer
            entry = drain.entry
        if not entry.ready:
            raise ModelNotReady(f"model '{name}' version {version} is not ready: {entry.reason}")
        return entry

    def get_ready(self, name: str, version: str | None = None) -> ModelVersion:
        mv = self.find(name, version)
        if not mv.ready:
            raise ModelNotReady(f"model '{name}' version {mv.version} is not ready: {mv.reason}")
        return mv
