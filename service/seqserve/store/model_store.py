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

A broken file affects its model only, and is logged once per change of the file, not on every
scan. A version whose model.onnx or signature.json cannot be loaded is not ready (its requests get
503 / UNAVAILABLE with the reason) and is tried again when either file changes. A config.yaml that
breaks while the model serves is ignored, as Triton's polling does with a failed reload: the
versions serving keep their last good settings until the file is fixed. A version that loads
while the file is broken has no good settings to keep, so it is not ready until the file is fixed.

Which models it serves: every model directory (poll mode, `models=None`), or only those it is told
(explicit model control, `seqserve.repository`): then a scan re-reads nothing by itself, `load`
(re)reads one model all or nothing, and `unload` removes one as if its directory were gone (its
sessions drain the same way).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from seqserve.errors import InvalidInput, ModelNotFound, ModelNotReady, SeqserveError
from seqserve.store.model_config import CONFIG_FILE, ModelConfig, read_config_bytes
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
    # What is wrong with the model's config.yaml while this version serves on its last good one.
    problem: str = ""
    # The version's files as last tried (`_fingerprint`): a failed load is retried when they change.
    files: tuple[tuple[int, int, int], ...] = ()

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


def _fingerprint(path: Path) -> tuple[tuple[int, int, int], ...]:
    """(inode, size, mtime) of a version's files: changes when either is rewritten or replaced."""
    stats = []
    for name in (MODEL_FILE, SIGNATURE_FILE):
        try:
            st = (path / name).stat()
            stats.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((0, -1, 0))
    return tuple(stats)


class ModelStore:
    def __init__(
        self,
        root: Path,
        loader: Loader,
        drain_seconds: float = 0.0,
        in_use: InUse = _unknown_use,
        models: Iterable[str] | None = None,
    ) -> None:
        self.root = Path(root)
        # The models served: None for every model directory (poll mode), else only these (explicit).
        self.served: frozenset[str] | None = None if models is None else frozenset(models)
        self._loader = loader
        self.drain_seconds = drain_seconds
        self._in_use = in_use
        self._models: dict[str, dict[int, ModelVersion]] = {}
        self._draining: dict[tuple[str, int], _Drain] = {}
        self._scan_lock = threading.Lock()
        # Per model: its config.yaml's bytes as last read and what they meant, so a file is parsed
        # (and a problem logged) once per change.
        self._configs: dict[str, tuple[bytes | None, ModelConfig | SeqserveError]] = {}

    def scan(self, names: Collection[str] | None = None) -> None:
        """Brings the loaded set in line with the directory: load new versions, unload removed ones.

        Re-reads the models `names` (of those served); by default every model in poll mode and none
        under explicit control, where a scan only unloads drained versions."""
        if names is None and self.served is not None:
            names = ()
        with self._scan_lock:
            unloaded = self._rescan(names)
        _close(unloaded)

    def load(self, name: str, change: Callable[[], Callable[[], None]] | None = None) -> None:
        """(Re)reads one model and serves it, all or nothing: when a version of it cannot serve, or it has
        none, the served versions stay as they were and InvalidInput says why.

        `change` writes the model's files first, under the same lock as scans (a poll never sees them
        before this load does), and returns what takes them back if the load fails."""
        with self._scan_lock:
            undo_change = change() if change is not None else None
            before = (self._models, self._draining, dict(self._configs), self.served)
            if self.served is not None:
                self.served = self.served | {name}
            unloaded = self._rescan({name})
            versions = self._models.get(name, {})
            problems = [f"version {mv.version}: {mv.reason}" for mv in versions.values() if not mv.ready]
            if not versions:
                problems = [f"no version directory of {self.root / name} holds both {MODEL_FILE} and {SIGNATURE_FILE}"]
            config = self._configs.get(name, (None, None))[1]
            if isinstance(config, SeqserveError):  # versions serving would keep their old settings: say so
                problems.insert(0, str(config))
            if problems:
                self._undo(name, before)
                if undo_change is not None:
                    undo_change()
                raise InvalidInput(f"model '{name}' failed to load, nothing changed: {'; '.join(problems)}")
        _close(unloaded)

    def _undo(self, name: str, before: tuple[Any, Any, Any, Any]) -> None:
        """Back to `before` after a failed `load` of `name`: runners it made closed, settings it told undone."""
        old = {id(mv.runner): mv for mv in before[0].get(name, {}).values() if mv.runner is not None}
        made = []
        for entry in self._models.get(name, {}).values():
            if entry.runner is None:
                continue
            previous = old.get(id(entry.runner))
            if previous is None:
                made.append(entry)
            elif previous.config != entry.config:
                entry.runner.configure(previous.config)
        self._models, self._draining, self._configs, self.served = before
        _close(made)

    def unload(self, name: str) -> bool:
        """Stops serving a model (explicit control) as if its directory were gone: its versions drain.
        False when it was not served."""
        with self._scan_lock:
            if self.served is None or name not in self.served:
                return False
            self.served = self.served - {name}
            unloaded = self._rescan({name})
        _close(unloaded)
        return True

    def _rescan(self, names: Collection[str] | None) -> list[ModelVersion]:
        """Re-reads the models `names` (all when None); the others' entries are kept as they are."""
        found = self._find_versions(names)
        now = time.monotonic()
        draining = dict(self._draining)
        current = {(n, v): mv for n, vs in self._models.items() for v, mv in vs.items()}
        kept = {} if names is None else {n: vs for n, vs in self._models.items() if n not in names}
        updated: dict[str, dict[int, ModelVersion]] = dict(kept)
        configs: dict[str, ModelConfig | SeqserveError] = {}
        for (name, version), path in sorted(found.items()):
            if name not in configs:
                configs[name] = self._read_config(name)
            back = draining.pop((name, version), None)  # back on disk: serving again
            entry = current.get((name, version)) or (back.entry if back else None)
            if entry is None or (entry.runner is None and entry.files != _fingerprint(path)):
                entry = self._load(name, version, path, configs[name])
            updated.setdefault(name, {})[version] = self._configured(entry, configs[name])
        unloaded = []
        for key in current.keys() - found.keys():
            if key[0] in kept:
                continue
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
        # Forget removed models.
        self._configs = {name: self._configs[name] for name in (*configs, *kept) if name in self._configs}
        # One assignment each, so readers see the old set or the new one, never a mix.
        self._models, self._draining = updated, draining
        return unloaded

    def close(self) -> None:
        """Unloads every version (the server is stopping)."""
        with self._scan_lock:
            entries = [mv for vs in self._models.values() for mv in vs.values()]
            entries += [drain.entry for drain in self._draining.values()]
            self._models, self._draining = {}, {}
        _close(entries)

    def _read_config(self, name: str) -> ModelConfig | SeqserveError:
        """The model's config.yaml, parsed only when its bytes changed since the last scan."""
        path = self.root / name / CONFIG_FILE
        try:
            content = read_config_bytes(path)
        except SeqserveError as e:
            content, meaning = str(e).encode(), e  # unreadable: the same error text is the same state
            if self._configs.get(name, (None, None))[0] != content:
                log.error("model %s: %s", name, e)
            self._configs[name] = (content, meaning)
            return meaning
        known = self._configs.get(name)
        if known is not None and known[0] == content:
            return known[1]
        try:
            result: ModelConfig | SeqserveError = ModelConfig() if content is None else ModelConfig.parse(path, content)
        except SeqserveError as e:
            log.error("model %s: %s (versions serving keep their last good settings; new ones wait for a fix)", name, e)
            result = e
        self._configs[name] = (content, result)
        return result

    @staticmethod
    def _configured(entry: ModelVersion, config: ModelConfig | SeqserveError) -> ModelVersion:
        """The entry under the model's current config.yaml. While the file is broken, a version that
        serves keeps its last good settings, and one that never had any is unavailable; once it is
        fixed, both serve under it (a version that failed to load stays unavailable). Its runner is
        told of every change."""
        if isinstance(config, SeqserveError):
            if entry.ready:
                return entry if entry.problem == str(config) else replace(entry, problem=str(config))
            if entry.runner is None:
                return entry
            return replace(entry, state=UNAVAILABLE, reason=str(config))
        if entry.runner is None or (entry.ready and entry.config == config and not entry.problem):
            return entry
        if entry.config != config:
            entry.runner.configure(config)
        return replace(entry, config=config, state=READY, reason="", problem="")

    def model_dirs(self) -> list[str]:
        """Every model directory of the store, served or not."""
        if not self.root.is_dir():
            return []
        return sorted(d.name for d in self.root.iterdir() if d.is_dir() and not d.name.startswith("."))

    def draining(self) -> list[ModelVersion]:
        """Versions removed or unloaded whose sessions may still finish on them."""
        return [drain.entry for drain in self._draining.values()]

    def _find_versions(self, names: Collection[str] | None = None) -> dict[tuple[str, int], Path]:
        if not self.root.is_dir():
            log.warning("model store %s does not exist", self.root)
            return {}
        found = {}
        for model_dir in self.root.iterdir():
            if not model_dir.is_dir() or model_dir.name.startswith("."):
                continue
            if (names is not None and model_dir.name not in names) or (
                self.served is not None and model_dir.name not in self.served
            ):
                continue
            for version_dir in model_dir.iterdir():
                if is_version_dir(version_dir):
                    found[(model_dir.name, int(version_dir.name))] = version_dir
        return found

    def _load(self, name: str, version: int, path: Path, config: ModelConfig | SeqserveError) -> ModelVersion:
        usable = config if isinstance(config, ModelConfig) else ModelConfig()  # the entry is unavailable anyway
        files = _fingerprint(path)  # before reading: a change made while loading is seen next scan
        try:
            signature = Signature.read(path)
            runner = self._loader(name, version, path / MODEL_FILE, signature, usable)
        except SeqserveError as e:
            log.error("model %s version %d failed to load: %s", name, version, e)
            return ModelVersion(name, version, path, UNAVAILABLE, reason=str(e), files=files)
        except Exception as e:  # a broken ONNX file must not take the server down; retried when it changes
            log.error(
                "model %s version %d failed to load: %s: %s", name, version, type(e).__name__, e,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )  # fmt: skip
            return ModelVersion(name, version, path, UNAVAILABLE, reason=f"{type(e).__name__}: {e}", files=files)
        log.info("model %s version %d loaded from %s", name, version, path)
        # Loaded while config.yaml is broken: no good settings to serve under yet (`_configured`).
        state, reason = (READY, "") if config is usable else (UNAVAILABLE, str(config))
        return ModelVersion(
            name, version, path, state, signature=signature, runner=runner, config=usable, reason=reason, files=files
        )

    def names(self) -> list[str]:
        return sorted(self._models)

    def versions(self, name: str) -> list[ModelVersion]:
        """Every version of a model the store knows, ready or not, lowest first."""
        try:
            versions = self._models[name]
        except KeyError:
            if self.served is not None and name in self.model_dirs():
                raise ModelNotFound(
                    f"model '{name}' is not loaded (explicit model control: POST /v2/repository/models/{name}/load)"
                ) from None
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
                    " or unloaded"
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


def _close(entries: Iterable[ModelVersion]) -> None:
    """Closes the runners of versions no request can find any more."""
    for entry in entries:
        if entry.runner is not None:
            entry.runner.close()
