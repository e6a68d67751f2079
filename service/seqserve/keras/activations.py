"""The name of a serialized Keras activation (a string, or a Keras 3 object config)."""

from __future__ import annotations

from typing import Any


def activation_name(spec: Any) -> str | None:
    """The Keras name of a serialized activation, or None if it is not a built-in one."""
    if spec is None:
        return "linear"
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        cfg = spec.get("config")
        module = str(spec.get("module") or "")
        if isinstance(cfg, str) and (not module or module.startswith("keras")):
            return cfg
    return None
