"""Read a model architecture file written by Keras' `to_json()` or `to_yaml()` (Keras 0.x to 2),
as plain data: JSON, or YAML through the safe loader (nothing in the file is constructed or run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from seqserve.errors import ExportError

YAML_SUFFIXES = (".yaml", ".yml")


class _ArchitectureLoader(yaml.SafeLoader):
    """Safe YAML, plus the `!!python/tuple` tag old Keras' `to_yaml` writes for shapes (read as a list)."""


_ArchitectureLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node)
)


def read_architecture(path: Path, limit: int) -> dict[str, Any]:
    """The model config in `path` (.json, or .yaml/.yml; other names are told apart by content)."""
    size = path.stat().st_size
    if size > limit:
        raise ExportError(f"{path}: architecture file of {size:,} bytes, over the limit of {limit:,}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ExportError(f"{path}: not a Keras architecture file (not UTF-8 text)") from None
    is_yaml = path.suffix.lower() in YAML_SUFFIXES or (
        path.suffix.lower() != ".json" and not text.lstrip().startswith("{")
    )
    try:
        config = _safe_yaml(text) if is_yaml else json.loads(text)
    except yaml.YAMLError as e:
        raise ExportError(f"{path}: not a Keras YAML architecture ({str(e).splitlines()[0]})") from None
    except json.JSONDecodeError as e:
        raise ExportError(f"{path}: not a Keras JSON architecture ({e})") from None
    # Keras 1/2: {"class_name": ..., "config": ...}; Keras 0.x: {"name": "Sequential", "layers": [...]}
    if not isinstance(config, dict) or not ("class_name" in config or isinstance(config.get("layers"), list)):
        raise ExportError(f"{path}: not a Keras model architecture (no top-level class_name or layers)")
    return config


def _safe_yaml(text: str) -> Any:
    """`yaml.safe_load` with the tuple tag added (what safe_load does, with our SafeLoader subclass)."""
    loader = _ArchitectureLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
