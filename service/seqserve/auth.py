"""API keys: who is calling, for every protocol.

Off unless `api_keys_file` is set. The file holds one key per line, `key` or `name:key`; blank lines
and lines starting with '#' are skipped. It is re-read when it changes (looked at no more than once a
second), so a Kubernetes Secret mounted as a file rotates keys without a restart; a file that breaks
later is logged once and the keys read before it stay in force.

A caller's name is its namespace (DESIGN: "Auth namespaces"): every sequence id and session id it
uses lives inside it (`seqserve.sessions.manager.session_key`), so another key's "42" is another
sequence and an id of another key is NOT_FOUND, never FORBIDDEN. A key without a name is named by a
digest of it. Keys are held and compared as SHA-256 digests and never logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from seqserve.errors import PermissionDenied, Unauthenticated
from seqserve.rate import PerKeyRate
from seqserve.sessions.stores import SessionLimits

log = logging.getLogger(__name__)

SCHEME = "bearer"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
MIN_KEY_LENGTH = 16  # shorter is guessable; `openssl rand -hex 32` gives 64
_RECHECK_SECONDS = 1.0


class KeyFileError(ValueError):
    """The API keys file cannot be used: unreadable, or a line that is not `key` or `name:key`."""


@dataclass(frozen=True)
class _FileStamp:
    inode: int
    size: int
    mtime_ns: int


class ApiKeys:
    """The keys of one file, by digest, each with its caller's name."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self._clock = clock
        self._stamp = self._stat()
        self._names = read_keys(self.path)  # raises KeyFileError: a server must not start on a broken file
        self.name_count = len(set(self._names.values()))
        self._checked = clock()

    def owner(self, authorization: str | None) -> str:
        """The caller's name for an `Authorization` value (`Bearer <key>`); Unauthenticated otherwise."""
        if not authorization:
            raise Unauthenticated("this server needs an API key: send it as 'Authorization: Bearer <key>'")
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != SCHEME or not key.strip():
            raise Unauthenticated("send the API key as 'Authorization: Bearer <key>'")
        self._reload_if_changed()
        name = self._names.get(_digest(key.strip()))
        if name is None:
            raise Unauthenticated("the API key is not known to this server")
        return name

    def _reload_if_changed(self) -> None:
        now = self._clock()
        if now - self._checked < _RECHECK_SECONDS:
            return
        self._checked = now
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            names = read_keys(self.path)
        except KeyFileError as e:
            log.error("API keys file not reloaded, the keys read before stay in force: %s", e)
            return
        self._names, self.name_count = names, len(set(names.values()))
        log.info("API keys reloaded from %s: %d keys", self.path, len(self._names))

    def _stat(self) -> _FileStamp | None:
        try:
            st = os.stat(self.path)  # follows the symlinks a mounted Secret swaps on update
        except OSError:
            return None
        return _FileStamp(st.st_ino, st.st_size, st.st_mtime_ns)


def read_keys(path: Path) -> dict[str, str]:
    """Key digest -> caller name, from a keys file; KeyFileError naming the line (never the key)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as e:
        raise KeyFileError(f"API keys file {path}: cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise KeyFileError(f"API keys file {path}: not UTF-8 text (byte {e.start})") from None
    names: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, key = line.partition(":")
        if not colon:
            name, key = "", line
        key = key.strip()
        where = f"API keys file {path}, line {number}"
        if len(key) < MIN_KEY_LENGTH:
            raise KeyFileError(f"{where}: a key must have at least {MIN_KEY_LENGTH} characters")
        digest = _digest(key)
        name = name.strip() or f"key-{digest[:12]}"
        if not _NAME.fullmatch(name):
            raise KeyFileError(f"{where}: a name is 1 to 64 of A-Z a-z 0-9 _ . -, not {name[:64]!r}")
        if digest in names:
            raise KeyFileError(f"{where}: the same key is given twice")
        names[digest] = name
    if not names:
        raise KeyFileError(f"API keys file {path}: holds no key (one per line, `key` or `name:key`)")
    return names


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# What each endpoint is, for `open_endpoints`: anything not named here needs a key when keys are on.
_REST_KINDS = (
    ("health", re.compile(r"/v2/health/(live|ready)|/v2/models/[^/]+(/versions/[^/]+)?/ready")),
    ("metrics", re.compile(r"/metrics")),
    ("metadata", re.compile(r"/v2|/v2/models/[^/]+(/versions/[^/]+)?|/openapi\.json|/docs(/oauth2-redirect)?|/redoc")),
    ("page", re.compile(r"/ui(/[^/]*)?")),
)
# The playground's static files hold no data: a browser opens them without a key, and the page
# sends the key the person gives it with each call it makes.
_ALWAYS_OPEN = frozenset({"page"})
_GRPC_KINDS = {
    "/inference.GRPCInferenceService/ServerLive": "health",
    "/inference.GRPCInferenceService/ServerReady": "health",
    "/inference.GRPCInferenceService/ModelReady": "health",
    "/grpc.health.v1.Health/Check": "health",
    "/grpc.health.v1.Health/Watch": "health",
    "/inference.GRPCInferenceService/ServerMetadata": "metadata",
    "/inference.GRPCInferenceService/ModelMetadata": "metadata",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "metadata",
}


def rest_endpoint_kind(path: str) -> str | None:
    """health, metrics, metadata or page for a REST path (without any root path), None for the rest."""
    return next((kind for kind, pattern in _REST_KINDS if pattern.fullmatch(path)), None)


def grpc_method_kind(method: str) -> str | None:
    """health or metadata for a gRPC method's full name, None for the rest."""
    return _GRPC_KINDS.get(method)


class Authenticator:
    """Who a request comes from, for every front end: None with authentication off or on an open
    endpoint, the caller's name otherwise (Unauthenticated without a valid key). And how many
    sessions a caller may hold (`limits`) and start (`admit_new_session`)."""

    def __init__(
        self,
        keys: ApiKeys | None = None,
        open_to_anyone: frozenset[str] = frozenset(),
        max_sessions: int = 100_000,
        max_sessions_per_key: int = 0,
        session_creations_per_key: float = 0.0,
        model_control_keys: frozenset[str] = frozenset(),
    ) -> None:
        self.keys = keys
        self.open_to_anyone = open_to_anyone
        self.max_sessions = max_sessions
        self.max_sessions_per_key = max_sessions_per_key
        self.creations = PerKeyRate("starts sequences or creates sessions", session_creations_per_key)
        self.model_control_keys = model_control_keys

    def require_model_control(self, owner: str | None) -> None:
        """Loading and unloading models changes the store for every key: with API keys on, only the
        keys named in `model_control_keys` may (PermissionDenied: the endpoint is no secret)."""
        if self.keys is not None and owner not in self.model_control_keys:
            raise PermissionDenied(
                f"API key '{owner}' may not load or unload models; name it in SEQSERVE_MODEL_CONTROL_KEYS"
            )

    def admit_new_session(self, owner: str | None, count: int = 1) -> None:
        """A sequence start or a session creation by `owner` (`count` of them: a fork), all admitted or
        none: LimitExceeded past its key's rate."""
        if owner is not None:
            self.creations.take(owner, count)

    def limits(self, limits: SessionLimits, owner: str | None) -> SessionLimits:
        """A model's session limits, with the caller's share when there is a caller: the setting, or
        else an equal share of the server (so that the shares of all keys fit in it together)."""
        if owner is None or self.keys is None:
            return limits
        share = self.max_sessions_per_key or max(1, self.max_sessions // self.keys.name_count)
        return replace(limits, max_per_owner=share)

    @property
    def on(self) -> bool:
        return self.keys is not None

    def caller(self, kind: str | None, authorization: str | None) -> str | None:
        if self.keys is None or (kind is not None and (kind in self.open_to_anyone or kind in _ALWAYS_OPEN)):
            return None
        return self.keys.owner(authorization)
