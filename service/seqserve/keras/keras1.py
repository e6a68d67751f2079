"""Keras 1.x model configs and weights, translated into the Keras 2 form the rest of the reader and
the exporter already know (Keras 2 class names and config keys; weights in Keras 2 `get_weights()`
order), and the test that tells a Keras 1 config from a later one.

Keras 1 writes `output_dim`, `init`, `inner_activation`, `consume_less`, `dropout_W`... and stores
the gates of a recurrent layer either as separate matrices per gate ('cpu', 'mem': LSTM in the order
i, c, f, o; GRU z, r, h) or concatenated ('gpu': LSTM i|f|c|o, GRU z|r|h), see
tests/fixtures/old_keras/README.md. The equations are Keras 2's with GRU reset_after=False and
hard_sigmoid 0.2x+0.5, which a model of Keras major version 1 gets from the exporter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seqserve.errors import ExportError

RECURRENT = ("SimpleRNN", "GRU", "LSTM")
# Layer classes of Keras 1 this translation knows. Others (JZS1, TimeDistributedDense, Highway...)
# are refused by name.
LAYER_CLASSES = (*RECURRENT, "InputLayer", "Masking", "Embedding", "Dense", "Dropout", "Activation", "TimeDistributed")
CONSUME_LESS = ("cpu", "mem", "gpu")

# Config keys only one generation writes (for the layer classes above); `output_dim` is not one of
# them, Keras 2's Embedding has it too.
_KERAS1_KEYS = {
    "init",
    "inner_init",
    "inner_activation",
    "forget_bias_init",
    "consume_less",
    "dropout_W",
    "dropout_U",
    "W_regularizer",
    "U_regularizer",
    "b_regularizer",
    "W_constraint",
    "input_dtype",
    "bias",
}
_LATER_KEYS = {
    "units",
    "kernel_initializer",
    "recurrent_initializer",
    "embeddings_initializer",
    "recurrent_activation",
    "use_bias",
    "kernel_regularizer",
    "embeddings_regularizer",
    "recurrent_dropout",
    "implementation",
    "dtype",
    "batch_shape",
}


def _layer_entries(config: Any) -> list[dict[str, Any]]:
    body = config.get("config") if isinstance(config, dict) else None
    entries = body if isinstance(body, list) else (body or {}).get("layers") if isinstance(body, dict) else None
    return [e for e in entries or [] if isinstance(e, dict)]


def _keys(entries: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for entry in entries:
        cfg = entry.get("config")
        if isinstance(cfg, dict):
            found |= set(cfg)
            inner = cfg.get("layer")
            if isinstance(inner, dict):
                found |= _keys([inner])
    return found


def is_keras1(config: Any, claimed_version: str | None, path: str) -> bool:
    """Whether `config` was written by Keras 1. `claimed_version` is what the file says (the
    `keras_version` attribute or key), None where it says nothing. A config that contradicts its
    version, or whose generation cannot be told apart, is refused."""
    entries = _layer_entries(config)
    keys = _keys(entries)
    old, new = bool(keys & _KERAS1_KEYS), bool(keys & _LATER_KEYS)
    listed = isinstance(config, dict) and isinstance(config.get("config"), list)
    major = claimed_version.strip().split(".")[0] if claimed_version else None
    if major in ("0", "1"):  # Keras 0.3 configs reach here in Keras 1 form (seqserve.keras.keras0)
        if new and not old:
            raise ExportError(
                f"{path}: the file says Keras {claimed_version} but its model config uses Keras 2 keys "
                f"({', '.join(sorted(keys & _LATER_KEYS)[:3])}); cannot tell which Keras wrote it"
            )
        return True
    if major is not None:
        if old and not new:
            raise ExportError(
                f"{path}: the file says Keras {claimed_version} but its model config uses Keras 1 keys "
                f"({', '.join(sorted(keys & _KERAS1_KEYS)[:3])}); cannot tell which Keras wrote it"
            )
        return False
    if old and new:
        raise ExportError(
            f"{path}: the model config mixes Keras 1 keys ({', '.join(sorted(keys & _KERAS1_KEYS)[:2])}) "
            f"and Keras 2 keys ({', '.join(sorted(keys & _LATER_KEYS)[:2])}) and records no keras_version; "
            "cannot tell which Keras wrote it"
        )
    if old:
        return True
    if listed and not new:
        raise ExportError(
            f"{path}: a Sequential config in list form without a keras_version or any Keras 1 or 2 "
            "config key; cannot tell which Keras wrote it"
        )
    return False


@dataclass
class Keras1Model:
    """A Keras 1 config turned into Keras 2 form, and what translating the weights needs per layer."""

    config: dict[str, Any]
    path: str
    # layer name -> (Keras 1 class, Keras 1 config), for the weights
    originals: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def weights(self, layer: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """A layer's weights as Keras 1 stored them (its `weight_names` order) -> Keras 2 order."""
        if layer not in self.originals:
            return arrays
        cls, cfg = self.originals[layer]
        return _weights(cls, cfg, arrays, f"{self.path}: layer {layer!r}")


def translate(config: Any, path: str) -> Keras1Model:
    """A Keras 1 model config (Sequential as a list of layers, or a functional `Model`) in Keras 2 form."""
    if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
        raise ExportError(f"{path}: model config is not a Keras model config")
    cls, body = config["class_name"], config.get("config")
    out = Keras1Model(config={}, path=path)
    if cls == "Sequential":
        if not isinstance(body, list) or not body:
            raise ExportError(f"{path}: Keras 1 Sequential model has no layers")
        layers = []
        for i, entry in enumerate(body):
            layers.append(translate_entry(entry, out, first=i == 0))
        out.config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": layers}}
        return out
    if cls == "Model":
        if not isinstance(body, dict) or not isinstance(body.get("layers"), list):
            raise ExportError(f"{path}: Keras 1 functional model has no layers")
        layers = []
        for entry in body["layers"]:
            new = translate_entry(entry, out, first=False)
            new["name"] = new["config"]["name"]
            new["inbound_nodes"] = entry.get("inbound_nodes") or []
            layers.append(new)
        out.config = {"class_name": "Model", "config": {**body, "layers": layers}}
        return out
    raise ExportError(f"{path}: top-level class {cls!r} is not a Keras 1 Sequential or Model")


def translate_entry(entry: Any, out: Keras1Model, first: bool) -> dict[str, Any]:
    """One Keras 1 layer entry in the Keras 2 form, its translated layer recorded in `out`."""
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        raise ExportError(f"{out.path}: malformed layer entry {str(entry)[:80]!r}")
    cls, cfg = str(entry.get("class_name")), entry["config"]
    name = str(cfg.get("name") or entry.get("name") or cls.lower())
    where = f"{out.path}: layer {name!r}"
    if cls not in LAYER_CLASSES:
        raise ExportError(f"{where}: class {cls!r} is not a layer seqserve can export from this Keras version")
    new = translate_config(cls, {**cfg, "name": name}, where, first)
    if cls == "TimeDistributed":
        inner = translate_entry(cfg.get("layer"), Keras1Model({}, out.path), first=False)
        if inner["class_name"] != "Dense":
            raise ExportError(f"{where}: TimeDistributed({inner['class_name']}) is not supported")
        new["layer"] = inner
        out.originals[name] = ("Dense", (cfg.get("layer") or {}).get("config") or {})
    else:
        out.originals[name] = (cls, cfg)
    return {"class_name": cls, "config": new}


def translate_config(cls: str, cfg: dict[str, Any], where: str, first: bool) -> dict[str, Any]:
    """A Keras 1 layer config in Keras 2 keys (`first`: the model's first layer, which carries the input shape)."""
    new: dict[str, Any] = {"name": cfg["name"], "trainable": bool(cfg.get("trainable", True))}
    shape = cfg.get("batch_input_shape")
    if shape is None and first and cls == "Dense" and cfg.get("input_dim"):
        shape = [None, cfg["input_dim"]]
    elif shape is None and first and cls not in ("InputLayer", "Embedding") and cfg.get("input_dim"):
        shape = [None, cfg.get("input_length"), cfg["input_dim"]]
    if shape is None and first and cls == "Embedding":
        shape = [None, cfg.get("input_length")]
    if shape is not None:
        new["batch_input_shape"] = list(shape)
    if "input_dtype" in cfg or shape is not None:
        new["dtype"] = str(cfg.get("input_dtype") or ("int32" if cls == "Embedding" else "float32"))
    if cls == "InputLayer":
        if shape is None:
            raise ExportError(f"{where}: InputLayer without batch_input_shape")
        new["sparse"] = bool(cfg.get("sparse", False))
        if new["sparse"]:
            raise ExportError(f"{where}: sparse inputs are not supported")
    elif cls in RECURRENT:
        if cfg.get("consume_less", "cpu") not in CONSUME_LESS:
            raise ExportError(f"{where}: unknown consume_less {cfg.get('consume_less')!r}")
        new.update(
            units=_units(cfg, where),
            activation=cfg.get("activation", "tanh"),
            use_bias=True,
            return_sequences=bool(cfg.get("return_sequences", False)),
            return_state=False,
            go_backwards=bool(cfg.get("go_backwards", False)),
            stateful=bool(cfg.get("stateful", False)),
            unroll=bool(cfg.get("unroll", False)),
            dropout=float(cfg.get("dropout_W") or 0.0),
            recurrent_dropout=float(cfg.get("dropout_U") or 0.0),
            implementation=1,
        )
        if cls != "SimpleRNN":
            new["recurrent_activation"] = cfg.get("inner_activation", "hard_sigmoid")
        if cls == "GRU":
            new["reset_after"] = False
        if cls == "LSTM":
            new["unit_forget_bias"] = False
    elif cls == "Dense":
        new.update(
            units=_units(cfg, where), activation=cfg.get("activation", "linear"), use_bias=bool(cfg.get("bias", True))
        )
    elif cls == "Embedding":
        new.update(
            input_dim=int(cfg["input_dim"]),
            output_dim=_units(cfg, where),
            mask_zero=bool(cfg.get("mask_zero", False)),
            input_length=cfg.get("input_length"),
        )
    elif cls == "Masking":
        new["mask_value"] = cfg.get("mask_value", 0.0)
    elif cls == "Dropout":
        new["rate"] = float(cfg.get("p", 0.0))
    elif cls == "Activation":
        new["activation"] = cfg.get("activation", "linear")
    return new


def _units(cfg: dict[str, Any], where: str) -> int:
    units = cfg.get("output_dim")
    if type(units) is not int or units <= 0:
        raise ExportError(f"{where}: output_dim must be a positive integer, got {units!r}")
    return units


def _weights(cls: str, cfg: dict[str, Any], arrays: list[np.ndarray], where: str) -> list[np.ndarray]:
    mode = cfg.get("consume_less", "cpu")
    if cls == "LSTM" and len(arrays) == 12:
        # stored per gate as (W, U, b) triples in the order i, c, f, o; Keras 2 concatenates i|f|c|o
        i, c, f, o = (arrays[k : k + 3] for k in range(0, 12, 3))
        return [np.concatenate([g[part] for g in (i, f, c, o)], axis=-1) for part in range(3)]
    if cls == "GRU" and len(arrays) == 9:
        z, r, h = (arrays[k : k + 3] for k in range(0, 9, 3))
        return [np.concatenate([g[part] for g in (z, r, h)], axis=-1) for part in range(3)]
    if cls in RECURRENT and len(arrays) == 3 and (cls == "SimpleRNN" or mode == "gpu"):
        return list(arrays)  # W, U, b: already Keras 2's kernel, recurrent_kernel, bias
    if cls in RECURRENT:
        expected = {"LSTM": 12, "GRU": 9, "SimpleRNN": 3}[cls] if cls == "SimpleRNN" or mode != "gpu" else 3
        raise ExportError(
            f"{where}: {cls} with consume_less={mode!r} stores {expected} weights, the file has {len(arrays)}"
        )
    return list(arrays)  # Dense (W, b), Embedding (W): Keras 2's order already
