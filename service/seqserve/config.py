"""Server-wide settings: one pydantic-settings class, every field also a SEQSERVE_* variable.

The settings a model may override in its `config.yaml` are declared once, in `ModelDefaults`; the
server's values of them are the defaults every model starts from (`seqserve.store.model_config`
merges the two, once per change of the file).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda"]
# Where batched runs happen (`batch_compute`).
BatchCompute = Literal["auto", "loop", "thread"]
# Who loads and unloads models (`model_control`), as Triton's --model-control-mode.
ModelControl = Literal["poll", "explicit"]

# Endpoints that may answer without an API key (`open_endpoints`): `seqserve.auth` says which are which.
OPEN_ENDPOINT_KINDS = ("health", "metrics", "metadata")
_SESSION_STORE_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")


class ModelDefaults(BaseModel):
    """What a model runs with unless its config.yaml says otherwise."""

    batching: bool = Field(
        True, description="Gather concurrent requests and sequence steps of a model into one ORT run."
    )
    max_batch_size: int = Field(64, ge=1, le=65_536, description="Most samples (batch rows) in one batched run.")
    # Delays are bounded to seconds: a batch that waits longer only hangs its requests.
    max_queue_delay: float = Field(
        0.0,
        ge=0,
        le=5,
        description="Seconds a batch waits for more stateless requests after its first arrived. 0 batches what "
        "is already waiting (requests pile up while the previous batch runs), adding no latency when idle.",
    )
    sequence_batch_delay: float = Field(
        0.002,
        ge=0,
        le=5,
        description="Seconds a batch of sequence steps waits, at most, for the next steps of the other sessions "
        "that are streaming (stepped in the last 0.1 s); it closes as soon as they are all in, so a lone stream "
        "never waits. 0 batches what is already waiting.",
    )
    batch_compute: BatchCompute = Field(
        "auto",
        description="Where batched runs happen: `loop` (on the event loop: no thread hand-off, best with few "
        "cores), `thread` (a compute thread per model version, overlapping ORT with the network), or `auto`: "
        "thread for a model on CUDA, loop on CPU.",
    )
    inline_max_elements: int = Field(
        16384,
        ge=0,
        le=1 << 30,
        description="With batching off: requests whose tensors (inputs and states) hold at most this many "
        "elements run on the event loop itself, larger ones on a compute thread; handing a tiny step to a "
        "thread costs more than running it. 0 sends every request to a thread. Batched runs follow "
        "`batch_compute` instead.",
    )
    max_queue_size: int = Field(
        1024,
        ge=1,
        le=1_000_000,
        description="Requests of a model that may wait for their run at once (sequence steps included); more "
        "are refused with 503 / UNAVAILABLE and Retry-After, so a flood answers at once instead of piling up.",
    )
    max_sequence_idle: float = Field(
        300.0,
        ge=0,
        le=7 * 24 * 3600,
        description="Seconds a sequence may stay idle before its state is dropped (0 = never; at most a week).",
    )
    max_timesteps_per_request: int = Field(
        100_000,
        ge=1,
        le=100_000_000,
        description="Most timesteps (the second dimension of a sequence input) one request may carry; more is "
        "400 / INVALID_ARGUMENT. Send a long sequence as a sequence of chunks instead.",
    )
    max_elements_per_request: int = Field(
        16 * 1024 * 1024,
        ge=1,
        le=1 << 31,
        description="Most elements (numbers or strings) one request's input tensors may hold together, states "
        "given at a sequence start included; more is 400 / INVALID_ARGUMENT.",
    )


class Settings(BaseSettings, ModelDefaults):
    """What `seqserve serve` runs with. CLI flags override the environment, which overrides these defaults."""

    model_config = SettingsConfigDict(env_prefix="SEQSERVE_", extra="ignore")

    store: Path = Field(Path("model_store"), description="Model store directory: <store>/<name>/<version>/.")
    host: str = Field(
        "127.0.0.1",
        description="Address both servers bind to: this machine only by default; the container image sets 0.0.0.0.",
    )
    http_port: int = Field(
        8000, ge=0, le=65535, description="REST (KServe V2 + binary tensor extension) port; 0 disables REST."
    )
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="gRPC (inference.GRPCInferenceService) port; 0 disables gRPC."
    )
    device: Device = Field(
        "auto", description="Execution provider: cuda, cpu, or auto (CUDA when onnxruntime-gpu sees a GPU)."
    )
    cuda_tf32: bool = Field(
        False, description="Allow TF32 on CUDA. Off by default: with it on, cuDNN LSTMs differ from Keras by ~1e-3."
    )
    intra_op_threads: int = Field(
        1,
        ge=0,
        le=1024,
        description="ONNX Runtime intra-op threads per model (0 = ORT default). One is the default because "
        "spinning ORT workers starve the event loop on small machines; raise it for long sequences.",
    )
    inter_op_threads: int = Field(
        1, ge=0, le=1024, description="ONNX Runtime inter-op threads per model (0 = ORT default)."
    )
    allow_spinning: bool = Field(False, description="Let ORT worker threads spin while waiting for work.")
    max_request_bytes: int = Field(
        64 * 1024 * 1024, ge=1, le=(2 << 30) - 1, description="Largest accepted request body (HTTP 413 above)."
    )
    max_inputs_per_request: int = Field(
        64,
        ge=1,
        le=10_000,
        description="Most tensors (inputs, and states given at a sequence start or to the session API) in one "
        "request; counted before any is decoded. More is 400 / INVALID_ARGUMENT.",
    )
    max_sequence_id_length: int = Field(
        256,
        ge=1,
        le=65_536,
        description="Longest string `sequence_id` (characters) a request may use; longer is 400 / INVALID_ARGUMENT. "
        "Errors and logs show at most the first 32 characters of any id.",
    )
    # Transport limits: what one client may hold of the server's connections and time.
    header_read_timeout: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds a REST client has to send a request's headers, from the moment its connection opens "
        "(or its next request begins); then 408 and the connection is closed.",
    )
    body_read_timeout: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds a REST client has to send a whole request body, from the end of its headers; then 408 "
        "(or, if the answer has gone out already, the connection is closed). Bounds slow uploads: at the default "
        "size limit, 60 s asks for about 1 MB/s.",
    )
    max_connections: int = Field(
        1000,
        ge=0,
        le=1_000_000,
        description="REST connections open at once; a request on a connection beyond it is answered 503 with "
        "Retry-After and the connection closed (health checks are still answered). 0 = no bound.",
    )
    websocket_max_in_flight: int = Field(
        16,
        ge=1,
        le=10_000,
        description="Requests of one WebSocket read and not yet answered; a client sending more waits (the server "
        "stops reading its socket until answers go out).",
    )
    max_concurrent_rpcs: int = Field(
        10_000,
        ge=0,
        le=1_000_000,
        description="gRPC calls in progress at once, each open stream counting as one; one more is refused with "
        "RESOURCE_EXHAUSTED. 0 = no bound.",
    )
    store_poll_seconds: float = Field(
        2.0,
        ge=0,
        le=3600,
        description="How often the store directory is re-scanned for added or removed versions (0 = never).",
    )
    model_control: ModelControl = Field(
        "poll",
        description="Who loads and unloads models, as Triton's --model-control-mode: `poll` (every model of the "
        "store, rescanned every store_poll_seconds; a repository load rescans a model now, unload is refused) or "
        "`explicit` (only load_models at start, then only the repository API's load and unload).",
    )
    load_models: str = Field(
        "",
        max_length=65_536,
        description="With model_control=explicit: the models loaded at start, comma-separated, or `*` for every "
        "model of the store (Triton's --load-model). A name not in the store stops the start.",
    )
    warmup: bool = Field(True, description="Run each model once on zeros when it loads, before it reports ready.")
    shutdown_grace: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="On SIGTERM: readiness turns false and new connections and calls are refused at once; requests "
        "in flight and open streams have this many seconds to finish (streams end at their next request "
        "boundary), then the server exits 0. Keep it below Kubernetes' terminationGracePeriodSeconds.",
    )
    log_level: str = Field("info", description="Python logging level name (debug, info, warning, error, critical).")

    api_keys_file: Path | None = Field(
        None,
        description="Turns authentication on: a file of API keys, one per line, `key` or `name:key` (a mounted "
        "Kubernetes Secret works), re-read when it changes. Clients send `Authorization: Bearer <key>` (REST) or "
        "`authorization` metadata (gRPC); each key's sequences and sessions are its own.",
    )
    open_endpoints: str = Field(
        "health,metrics",
        description="With API keys on, what answers without a key: any of health, metrics, metadata, "
        "comma-separated ('' for nothing). Inference and sessions always need a key.",
    )

    sessions: str = Field(
        "memory",
        description="Where session states live: `memory` (this process), `redis://host:port/db` (`rediss://` "
        "with TLS) or a Redis Cluster, `redis+cluster://host:port[,host:port...]` (`rediss+cluster://`).",
    )
    session_copies: int = Field(
        10_000,
        ge=0,
        le=100_000_000,
        description="With Redis: sessions whose latest state a replica keeps, so that a continuing step reads "
        "nothing (a stale copy is detected by the save and the step applied again to the stored state).",
    )
    session_store_timeout: float = Field(
        5.0,
        gt=0,
        le=60,
        description="Seconds a call to the Redis session store may take; past it the request fails with 503 / "
        "UNAVAILABLE (retryable) and the server goes on.",
    )
    max_sessions: int = Field(
        100_000, ge=1, le=1_000_000_000, description="Most sessions held at once, over every model."
    )
    session_creations_per_key: float = Field(
        50.0,
        ge=0,
        le=1_000_000,
        description="With API keys on: sequence starts and session creations one key may make per second, on each "
        "replica (bursts of as many); past it 429 with Retry-After. 0 = no bound.",
    )
    model_control_keys: str = Field(
        "",
        max_length=65_536,
        description="With API keys on: names of the keys that may load and unload models (the repository "
        "extension), comma-separated; others get 403 / PERMISSION_DENIED. Without API keys anyone may.",
    )
    max_sessions_per_key: int = Field(
        0,
        ge=0,
        le=1_000_000_000,
        description="With API keys on: sessions one key may hold at once, over every model (at its share, a new "
        "session evicts the key's own least recently used idle one); 0 = an equal share, max_sessions divided by "
        "the number of key names.",
    )
    max_session_bytes: int = Field(
        1 << 30,
        ge=1,
        le=1 << 40,
        description="Most bytes of session state held at once, over every model: the memory store's sessions, or "
        "with Redis this replica's copies of them.",
    )
    session_eviction_grace: float = Field(
        5.0,
        ge=0,
        le=24 * 3600,
        description="When full, the least recently used session is evicted only if idle this many seconds; "
        "otherwise a new session is refused, so a flood of new sessions cannot push out active streams.",
    )
    max_pending_per_session: int = Field(
        16, ge=1, le=10_000, description="Requests of one session that may wait for their turn; more are refused."
    )

    @field_validator("sessions")
    @classmethod
    def _session_store(cls, value: str) -> str:
        if value != "memory" and not value.startswith(_SESSION_STORE_SCHEMES):
            raise ValueError(
                f"expected 'memory' or a Redis URL (redis://host:port/db, redis+cluster://host:port,...), not {value!r}"
            )
        return value

    @field_validator("open_endpoints")
    @classmethod
    def _open_endpoints(cls, value: str) -> str:
        unknown = set(_listed(value)) - set(OPEN_ENDPOINT_KINDS)
        if unknown:
            raise ValueError(f"expected a comma-separated list of {', '.join(OPEN_ENDPOINT_KINDS)}, not {value!r}")
        return value

    @property
    def model_controllers(self) -> frozenset[str]:
        """The key names `model_control_keys` lets load and unload models."""
        return frozenset(_listed(self.model_control_keys))

    @property
    def open_to_anyone(self) -> frozenset[str]:
        """The kinds of endpoint `open_endpoints` lets through without an API key."""
        return frozenset(_listed(self.open_endpoints))

    @property
    def models_at_start(self) -> list[str] | None:
        """What `load_models` names; None for every model of the store (`*`)."""
        names = _listed(self.load_models)
        return None if "*" in names else names

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if not isinstance(logging.getLevelName(value.upper()), int):
            raise ValueError(f"expected debug, info, warning, error or critical, not {value!r}")
        return value


def explain(error: ValidationError, fields: dict[str, FieldInfo], label: Callable[[str], str] = str) -> str:
    """A validation error as one line: each problem names the setting (as `label` spells it), what was
    wrong, and for a number its allowed range, e.g. `max_queue_delay: ... (allowed: 0 to 5), got inf`."""
    problems = []
    for err in error.errors():
        name = ".".join(map(str, err["loc"]))
        text = f"{label(name)}: {err['msg']}"
        field = fields.get(str(err["loc"][0])) if err["loc"] else None
        if field is not None and (bounds := allowed_range(field)):
            text += f" (allowed: {bounds})"
        if err["type"] != "extra_forbidden" and "input" in err:
            given = repr(err["input"])
            text += f", got {given[:40] + '...' if len(given) > 40 else given}"
        problems.append(text)
    return "; ".join(problems)


def allowed_range(field: FieldInfo) -> str:
    """`0 to 5`, `above 0 to 60`: a number field's bounds as declared, or '' for a field without any."""
    low = high = ""
    for bound in field.metadata:
        for attribute, words in (("ge", "{}"), ("gt", "above {}"), ("le", "{}"), ("lt", "below {}")):
            value = getattr(bound, attribute, None)
            if value is not None:
                text = words.format(f"{value:g}" if isinstance(value, float) else value)
                low, high = (text, high) if attribute in ("ge", "gt") else (low, text)
    return f"{low} to {high}" if low and high else ""


def _listed(value: str) -> list[str]:
    """The names of a comma-separated setting, in order, blanks dropped."""
    return [part.strip() for part in value.split(",") if part.strip()]
