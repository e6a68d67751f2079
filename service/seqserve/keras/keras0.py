"""Keras 0.3.x architectures (`to_json()` / `to_yaml()`), turned into the Keras 1 form that
`seqserve.keras.keras1` translates further: Keras 0.3's SimpleRNN, GRU and LSTM store and compute
as Keras 1's 'cpu' layout does (the same per-gate W, U, b, LSTM gates i, c, f, o; the same masking
rule, go_backwards and stateful behaviour), see tests/fixtures/old_keras/README.md.

Keras 0.2 is told apart (`generation`) and read by `seqserve.keras.keras02`: its default activations
and its masking rule differ, and SimpleDeepRNN / JZS1-3 have no Keras 1 form.
"""

from __future__ import annotations

from typing import Any

from seqserve.errors import ExportError

# Keys of a Keras 0.x layer entry that are not layer options.
_ENTRY_KEYS = {"name", "custom_name", "cache_enabled", "input_shape"}
# Keras 0.3 writes these (per layer / at the top); Keras 0.2 writes none of them.
_KERAS03_LAYER_KEYS = {"custom_name", "cache_enabled"}
_KERAS02_TOP_KEYS = {"class_mode", "theano_mode"}


def is_keras0(config: Any) -> bool:
    """A Keras 0.x architecture: `{"name": "Sequential", "layers": [...]}` (the class in "name")."""
    return isinstance(config, dict) and "class_name" not in config and isinstance(config.get("layers"), list)


def is_keras02(config: Any, path: str) -> bool:
    """A Keras 0.2 architecture (`seqserve.keras.keras02` reads it); refused if 0.x but undecidable."""
    return is_keras0(config) and generation(config, layer_list(config, path), path) == "0.2"


def to_keras1(config: dict[str, Any], path: str) -> dict[str, Any]:
    """A Keras 0.3 Sequential architecture as a Keras 1 Sequential config (layer names made unique,
    in layer order: the weights file has no names, only `layer_<k>` by position)."""
    layers = layer_list(config, path)
    version = generation(config, layers, path)
    if config.get("name") != "Sequential":
        raise ExportError(f"{path}: Keras {version} model {config.get('name')!r} is not a Sequential model")
    if version != "0.3":
        raise ExportError(
            f"{path}: a Keras 0.2 architecture; seqserve.keras.keras02 reads those (its defaults and "
            "masking rule differ from 0.3)"
        )
    return {"class_name": "Sequential", "config": keras1_entries(layers)}


def layer_list(config: dict[str, Any], path: str) -> list[dict[str, Any]]:
    """The layer entries of a Keras 0.x architecture, refused unless a non-empty list of objects."""
    layers = [e for e in config["layers"] if isinstance(e, dict)]
    if len(layers) != len(config["layers"]) or not layers:
        raise ExportError(f"{path}: malformed Keras 0.x architecture (layers must be a non-empty list of objects)")
    return layers


def keras1_entries(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keras 0.x layer entries as Keras 1 `{class_name, config}` entries (class kept, names made unique)."""
    seen: dict[str, int] = {}
    out = []
    for i, entry in enumerate(layers):
        cls = str(entry.get("name"))
        base = str(entry.get("custom_name") or cls.lower())
        seen[base] = seen.get(base, 0) + 1
        name = base if seen[base] == 1 else f"{base}_{seen[base]}"
        cfg = {k: v for k, v in entry.items() if k not in _ENTRY_KEYS}
        cfg["name"] = name
        shape = entry.get("input_shape")
        # Keras 0.x's Embedding writes its vocabulary size as "input_shape": that is not a shape.
        if i == 0 and isinstance(shape, list) and cls != "Embedding" and "batch_input_shape" not in cfg:
            cfg["batch_input_shape"] = [None, *shape]
        out.append({"class_name": cls, "config": cfg})
    return out


def generation(config: dict[str, Any], layers: list[dict[str, Any]], path: str) -> str:
    """ "0.3" or "0.2", from what each version writes; refused where the file does not tell."""
    new = any(set(entry) & _KERAS03_LAYER_KEYS for entry in layers) or "sample_weight_mode" in config
    old = bool(set(config) & _KERAS02_TOP_KEYS)
    if new == old:
        raise ExportError(
            f"{path}: a Keras 0.x architecture, but cannot tell Keras 0.2 from 0.3 (cannot tell which Keras wrote it)"
        )
    return "0.3" if new else "0.2"
