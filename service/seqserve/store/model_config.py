"""Per-model settings, `<store>/<name>/config.yaml`, beside the model like Triton's config.pbtxt.

Every field is optional; what a model does not set comes from the server's settings. The file is
read on each store scan, so a change applies without a restart (to new batches and new saves of
sessions; sessions already stored keep their expiry until their next step).

    # model_store/chars/config.yaml
    max_batch_size: 32        # samples per batched ORT run
    max_queue_delay: 0.002    # seconds a batch waits for more stateless requests
    sequence_batch_delay: 0.005  # seconds a batch waits, at most, for the steps of streaming sessions
    batching: true
    max_sequence_idle: 60     # seconds an idle sequence keeps its state
    max_sessions: 1000        # sessions of this model at once
    max_session_bytes: 10000000
    session_history: 8        # past steps each session keeps, for rewind and fork from a past step

The fields are declared once: those the server gives defaults for in `seqserve.config.ModelDefaults`,
the model's own bounds in `ModelSettings`. `ModelConfig`, the file, is every one of them made
optional; `ModelSettings.resolve` merges file and server once per change. A value out of its
range is refused with the range, as the server's own settings are (`seqserve.config.explain`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from seqserve.config import ModelDefaults, explain
from seqserve.errors import InvalidInput

CONFIG_FILE = "config.yaml"
# A settings file is a few lines; a bigger one is a mistake, and is not read whole on every scan.
MAX_CONFIG_BYTES = 64 * 1024


class ModelSettings(ModelDefaults):
    """What one model runs with: the server's defaults, overridden by its config.yaml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_sessions: int | None = Field(
        None,
        ge=1,
        le=1_000_000_000,
        description="Sessions of this model at once (LRU eviction past the grace period); none: no bound.",
    )
    max_session_bytes: int | None = Field(
        None, ge=1, le=1 << 40, description="State bytes of this model's sessions (memory store)."
    )
    session_history: int = Field(
        0,
        ge=0,
        le=1000,
        description="Past states each session keeps (one per step, the newest N) so that a client can rewind "
        "it or fork it from a past step; they count in max_session_bytes. 0: none.",
    )

    @classmethod
    def resolve(cls, defaults: ModelDefaults, config: ModelConfig) -> ModelSettings:
        """The one place a model's file and the server's settings are merged: the file wins where it sets a field."""
        inherited = {name: getattr(defaults, name) for name in ModelDefaults.model_fields}
        return cls(**(inherited | config.model_dump(exclude_none=True)))


def _optional(field: Any) -> Any:
    """A field of ModelSettings as config.yaml takes it: same bounds, unset (None) by default."""
    bounded = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
    return (bounded | None, Field(None, description=field.description))


_ModelConfigFields: type[BaseModel] = create_model(  # type: ignore[call-overload]
    "_ModelConfigFields",
    __config__=ConfigDict(extra="forbid", frozen=True),
    **{name: _optional(field) for name, field in ModelSettings.model_fields.items()},
)


class ModelConfig(_ModelConfigFields):
    """A model's config.yaml: any field of `ModelSettings`, unknown keys refused."""

    @classmethod
    def read(cls, model_dir: Path) -> ModelConfig:
        """The model's config.yaml, or every field unset when there is none."""
        path = Path(model_dir) / CONFIG_FILE
        content = read_config_bytes(path)
        return cls() if content is None else cls.parse(path, content)

    @classmethod
    def parse(cls, path: Path, content: bytes) -> ModelConfig:
        """The settings in `content`, read from `path`; InvalidInput naming the file and the problem."""
        try:
            data = yaml.safe_load(content.decode("utf-8")) or {}
        except UnicodeDecodeError as e:
            raise InvalidInput(f"{path}: not UTF-8 text (byte {e.start} is 0x{e.object[e.start]:02x})") from None
        except yaml.YAMLError as e:
            raise InvalidInput(f"{path}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise InvalidInput(f"{path}: expected a mapping of settings, got {type(data).__name__}")
        try:
            return cls(**{str(key): value for key, value in data.items()})
        except ValidationError as e:
            raise InvalidInput(f"{path}: {explain(e, ModelSettings.model_fields)}") from None


def read_config_bytes(path: Path) -> bytes | None:
    """The raw config.yaml (None when there is none); InvalidInput when it cannot be read or is too big."""
    try:
        with open(path, "rb") as file:
            content = file.read(MAX_CONFIG_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise InvalidInput(f"{path}: cannot be read: {e.strerror or e}") from None
    if len(content) > MAX_CONFIG_BYTES:
        raise InvalidInput(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB; a config.yaml holds a few settings")
    return content
