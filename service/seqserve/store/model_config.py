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
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seqserve.errors import InvalidInput

CONFIG_FILE = "config.yaml"


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    batching: bool | None = None
    max_batch_size: int | None = Field(None, ge=1)
    max_queue_delay: float | None = Field(None, ge=0)
    sequence_batch_delay: float | None = Field(None, ge=0)
    max_sequence_idle: float | None = Field(None, ge=0)
    max_sessions: int | None = Field(None, ge=1)
    max_session_bytes: int | None = Field(None, ge=1)

    @classmethod
    def read(cls, model_dir: Path) -> ModelConfig:
        """The model's config.yaml, or every field unset when there is none."""
        path = Path(model_dir) / CONFIG_FILE
        if not path.is_file():
            return cls()
        try:
            data = yaml.safe_load(path.read_text()) or {}
            if not isinstance(data, dict):
                raise InvalidInput(f"{path}: expected a mapping of settings, got {type(data).__name__}")
            return cls(**data)
        except yaml.YAMLError as e:
            raise InvalidInput(f"{path}: not valid YAML: {e}") from None
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise InvalidInput(f"{path}: {problems}") from None
