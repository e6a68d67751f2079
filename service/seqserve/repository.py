"""Triton's model repository extension over the model store: index, load, unload.

Two modes (`SEQSERVE_MODEL_CONTROL`), as Triton's `--model-control-mode`:
- `poll` (default): the store directory is the truth and is rescanned every `store_poll_seconds`.
  A load rescans the model now (after writing the config and files it carries), so a caller need
  not wait for the next poll; an unload is refused, since the next poll would load it back.
- `explicit`: only `SEQSERVE_LOAD_MODELS` load at start; nothing loads or unloads but by these calls.

A load is all or nothing: its config becomes the model's config.yaml (replacing it, as Triton's
override replaces config.pbtxt) and its files a new version directory (written aside and renamed
into place); if any version of the model then cannot serve, both are taken back and the served
versions stay as they were. Unlike Triton, what a load writes stays in the store: a restart or a
later poll serves the same model. Versions are never overwritten: a session is pinned to its version.

An unload stops new requests and new sequences at once; sessions already on the model finish on
their version, until they end or idle out (UNLOADING in the index), as when a version directory is
removed. Then it is unloaded.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from seqserve.errors import InvalidInput, ModelNotFound
from seqserve.load_config import settings_from_triton, to_yaml
from seqserve.store.model_config import CONFIG_FILE
from seqserve.store.model_store import READY, UNAVAILABLE, ModelStore
from seqserve.store.signature import MODEL_FILE, SIGNATURE_FILE

LOADING, UNLOADING = "LOADING", "UNLOADING"
NOT_LOADED = "not loaded"
# A model created by a load names a directory: no separators, no hidden or relative names.
_MODEL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_FILE_PARAMETER = re.compile(rf"file:([1-9][0-9]{{0,8}})/({re.escape(MODEL_FILE)}|{re.escape(SIGNATURE_FILE)})")


@dataclass(frozen=True)
class RepositoryModel:
    """One row of the repository index, as Triton's: version is '' for a model with none loaded."""

    name: str
    version: str
    state: str
    reason: str


class Repository:
    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._lock = asyncio.Lock()  # one load or unload at a time
        self._loading: set[str] = set()
        self._failed: dict[str, str] = {}  # why a model's last load failed, while it is not loaded

    @property
    def explicit(self) -> bool:
        return self.store.served is not None

    def index(self, ready_only: bool = False) -> list[RepositoryModel]:
        """Every model of the store: its versions loaded or draining, or one row saying why none is."""
        rows = []
        for mv in self.store.draining():
            rows.append(RepositoryModel(mv.name, str(mv.version), UNLOADING, "unloaded; its sessions may finish"))
        listed = {row.name for row in rows}
        for name in self.store.names():
            listed.add(name)
            rows += [RepositoryModel(name, str(mv.version), mv.state, mv.reason) for mv in self.store.versions(name)]
        for name in set(self.store.model_dirs()) - listed:
            state = LOADING if name in self._loading else UNAVAILABLE
            rows.append(RepositoryModel(name, "", state, self._failed.get(name, NOT_LOADED)))
        rows.sort(key=lambda row: (row.name, int(row.version or 0)))
        return [row for row in rows if row.state == READY] if ready_only else rows

    async def load(self, name: str, config_json: str | None, files: dict[str, bytes]) -> None:
        """Loads (or reloads) `name`, with a Triton JSON config if given, and files: Triton's parameter names
        (`file:<version>/model.onnx`, `file:<version>/signature.json`) to their decoded bytes."""
        settings = None if config_json is None else settings_from_triton(name, config_json)
        versions = _versions_from(name, files)
        if name not in self.store.model_dirs():
            if not versions:
                raise ModelNotFound(f"unknown model '{name}': no directory {name}/ in the model store")
            if not _MODEL_NAME.fullmatch(name):
                raise InvalidInput(f"'{name}' cannot name a new model (letters, digits, '_', '.', '-')")
        async with self._lock:
            self._loading.add(name)
            try:
                await asyncio.to_thread(self._load, name, None if settings is None else to_yaml(settings), versions)
                self._failed.pop(name, None)
            except InvalidInput as e:
                if name not in self.store.names():
                    self._failed[name] = str(e)
                raise
            finally:
                self._loading.discard(name)

    def _load(self, name: str, config: bytes | None, versions: dict[int, dict[str, bytes]]) -> None:
        model_dir = self.store.root / name

        def write() -> Callable[[], None]:
            written: list[Path] = []
            old_config = _read(model_dir / CONFIG_FILE)
            created = not model_dir.exists()

            def take_back() -> None:
                for path in written:
                    shutil.rmtree(path, ignore_errors=True)
                if config is not None:
                    if old_config is None:
                        (model_dir / CONFIG_FILE).unlink(missing_ok=True)
                    else:
                        _write_atomically(model_dir / CONFIG_FILE, old_config)
                if created:
                    shutil.rmtree(model_dir, ignore_errors=True)

            try:
                for version, contents in sorted(versions.items()):
                    written.append(_write_version(model_dir, version, contents))
                if config is not None:
                    _write_atomically(model_dir / CONFIG_FILE, config)
            except BaseException:
                take_back()
                raise
            return take_back

        self.store.load(name, write)

    async def unload(self, name: str) -> None:
        """Stops serving `name` (explicit control only); its sessions finish on it (see the module doc)."""
        if not self.explicit:
            raise InvalidInput(
                f"cannot unload model '{name}': the model store is polled, and would load it back; remove its "
                "directory instead, or run with SEQSERVE_MODEL_CONTROL=explicit"
            )
        async with self._lock:
            if not await asyncio.to_thread(self.store.unload, name) and name not in self.store.model_dirs():
                raise ModelNotFound(f"unknown model '{name}'")
            self._failed.pop(name, None)


def _versions_from(name: str, files: dict[str, bytes]) -> dict[int, dict[str, bytes]]:
    """`file:<version>/<file>` parameters grouped by version; each version needs both of its files."""
    versions: dict[int, dict[str, bytes]] = {}
    for key, content in files.items():
        match = _FILE_PARAMETER.fullmatch(key)
        if match is None:
            raise InvalidInput(
                f"load of model '{name}': parameter '{key}' is not a file of a version "
                f"(expected file:<version>/{MODEL_FILE} or file:<version>/{SIGNATURE_FILE})"
            )
        versions.setdefault(int(match[1]), {})[match[2]] = content
    for version, contents in versions.items():
        missing = {MODEL_FILE, SIGNATURE_FILE} - contents.keys()
        if missing:
            raise InvalidInput(f"load of model '{name}': version {version} lacks file:{version}/{missing.pop()}")
    return versions


def _write_version(model_dir: Path, version: int, contents: dict[str, bytes]) -> Path:
    """A new version directory, written aside and renamed into place: a scan never sees half of it."""
    target = model_dir / str(version)
    if target.exists():
        raise InvalidInput(
            f"model '{model_dir.name}' already has version {version}; a version is never overwritten "
            "(sessions are pinned to it): send the files as a new version"
        )
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".load-", dir=model_dir))
    try:
        for file_name, content in contents.items():
            (staging / file_name).write_bytes(content)
        os.rename(staging, target)  # fails if the version appeared meanwhile
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise InvalidInput(f"cannot write version {version} of model '{model_dir.name}': {e.strerror or e}") from None
    return target


def _write_atomically(path: Path, content: bytes) -> None:
    temporary = path.with_name(f".{path.name}.load")
    try:
        temporary.write_bytes(content)
        os.replace(temporary, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise InvalidInput(f"cannot write {path}: {e.strerror or e}") from None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def decode_file(key: str, text: object) -> bytes:
    """A `file:` parameter's base64 content; InvalidInput naming it when it is not base64."""
    if not isinstance(text, str):
        raise InvalidInput(f"load parameter '{key}' must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"load parameter '{key}' is not valid base64") from None
