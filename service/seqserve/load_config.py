"""A Triton model configuration (JSON, as a repository load sends it) read as our config.yaml settings.

Only fields that mean something here are taken; any other is refused, naming it, rather than
silently ignored (a client that sets `instance_group` would otherwise believe it took effect).

    max_batch_size                                         -> max_batch_size (0: batching off)
    dynamic_batching.max_queue_delay_microseconds          -> max_queue_delay (seconds)
    dynamic_batching.default_queue_policy.max_queue_size   -> max_queue_size
    sequence_batching.max_sequence_idle_microseconds       -> max_sequence_idle (seconds)
    sequence_batching.oldest.max_queue_delay_microseconds  -> sequence_batch_delay (seconds)
    name, platform, backend                                -> checked: must be this model, ONNX Runtime
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from seqserve.catalog import PLATFORM
from seqserve.errors import InvalidInput
from seqserve.store.model_config import ModelConfig

BACKEND = "onnxruntime"
_MICROSECONDS = 1_000_000
# (path in Triton's config, our setting, divisor): a divisor turns microseconds into seconds.
_FIELDS: dict[tuple[str, ...], tuple[str, int | None]] = {
    ("max_batch_size",): ("max_batch_size", None),
    ("dynamic_batching", "max_queue_delay_microseconds"): ("max_queue_delay", _MICROSECONDS),
    ("dynamic_batching", "default_queue_policy", "max_queue_size"): ("max_queue_size", None),
    ("sequence_batching", "max_sequence_idle_microseconds"): ("max_sequence_idle", _MICROSECONDS),
    ("sequence_batching", "oldest", "max_queue_delay_microseconds"): ("sequence_batch_delay", _MICROSECONDS),
}
_CHECKED = {"name", "platform", "backend"}


def settings_from_triton(model: str, config_json: str) -> ModelConfig:
    """The settings a Triton JSON config asks for; InvalidInput naming the field when it cannot be honoured."""
    try:
        config = json.loads(config_json)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"load of model '{model}': parameter 'config' is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise InvalidInput(f"load of model '{model}': parameter 'config' must be a JSON object")
    _check_identity(model, config)
    settings: dict[str, Any] = {}
    _collect(model, {k: v for k, v in config.items() if k not in _CHECKED}, (), settings)
    if settings.get("max_batch_size") == 0:  # Triton's "no batch dimension to gather on"
        del settings["max_batch_size"]
        settings["batching"] = False
    elif "max_batch_size" in settings or "dynamic_batching" in config:
        settings["batching"] = True
    try:
        return ModelConfig.parse(f"config of the load of model '{model}'", yaml.safe_dump(settings).encode())  # type: ignore[arg-type]
    except InvalidInput as e:  # the message names our setting; say which Triton field it came from
        raise InvalidInput(f"{e} (from Triton's {_triton_names(settings)})") from None


def to_yaml(config: ModelConfig) -> bytes:
    """config.yaml's text for these settings."""
    return yaml.safe_dump(config.model_dump(exclude_none=True), sort_keys=False).encode()


def _check_identity(model: str, config: dict[str, Any]) -> None:
    if config.get("name", model) != model:
        raise InvalidInput(f"load of model '{model}': config names another model, '{config['name']}'")
    if config.get("platform", PLATFORM) != PLATFORM:
        raise InvalidInput(f"load of model '{model}': platform must be '{PLATFORM}', not {config['platform']!r}")
    if config.get("backend", BACKEND) != BACKEND:
        raise InvalidInput(f"load of model '{model}': backend must be '{BACKEND}', not {config['backend']!r}")


def _collect(model: str, part: dict[str, Any], at: tuple[str, ...], settings: dict[str, Any]) -> None:
    for key, value in part.items():
        path = (*at, str(key))
        if path in _FIELDS:
            setting, scale = _FIELDS[path]
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            settings[setting] = value / scale if ok and scale else value
        elif isinstance(value, dict) and any(known[: len(path)] == path for known in _FIELDS):
            _collect(model, value, path, settings)
        else:
            understood = ", ".join(".".join(p) for p in _FIELDS)
            raise InvalidInput(
                f"load of model '{model}': config field '{'.'.join(path)}' is not supported here "
                f"(understood: {understood}; name, platform, backend are checked)"
            )


def _triton_names(settings: dict[str, Any]) -> str:
    ours = {setting: ".".join(path) for path, (setting, _) in _FIELDS.items()}
    return ", ".join(ours[s] for s in settings if s in ours)
