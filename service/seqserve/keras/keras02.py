"""Keras 0.2.0 architectures (`to_json()` / `to_yaml()`), turned into the Keras 2 form the exporter
reads. SimpleRNN, GRU and LSTM store their weights as Keras 1's 'cpu' layout does and go through
`seqserve.keras.keras1` with Keras 0.2's own defaults filled in (SimpleRNN and GRU default to
activation sigmoid there); SimpleDeepRNN and JZS1-3, which no later Keras has, keep their weights as
0.2 lists them (their cell kinds in `seqserve.cells` read them). See tests/fixtures/old_keras/README.md.

Keras 0.2's masking rule (every step is computed and output; a masked step's mask zeroes the states
the next step starts from; SimpleDeepRNN masks each lookback term by its own step's mask) differs
from Keras 0.3's and later: the recurrent layers carry `keras02_masking` in their config, which the
exporter and the NumPy reference read.
"""

from __future__ import annotations

from typing import Any

from seqserve.errors import ExportError
from seqserve.keras import keras0, keras1

# (activation, inner_activation) each recurrent class of Keras 0.2 defaults to.
DEFAULTS: dict[str, tuple[str, str | None]] = {
    "SimpleRNN": ("sigmoid", None),
    "SimpleDeepRNN": ("sigmoid", "hard_sigmoid"),
    "GRU": ("sigmoid", "hard_sigmoid"),
    "LSTM": ("tanh", "hard_sigmoid"),
    "JZS1": ("tanh", "sigmoid"),
    "JZS2": ("tanh", "sigmoid"),
    "JZS3": ("tanh", "sigmoid"),
}
# Recurrent classes only Keras 0.2 has: their configs are written here, their weights kept as stored.
ONLY_IN_KERAS02 = ("SimpleDeepRNN", "JZS1", "JZS2", "JZS3")
OTHER_LAYERS = ("Embedding", "Masking", "Dense", "Dropout", "Activation")


def translate(config: dict[str, Any], path: str) -> keras1.Keras1Model:
    """A Keras 0.2 Sequential architecture in Keras 2 form, with what its weights need per layer.
    Layer names are made unique in layer order (the weights file has only `layer_<k>` by position)."""
    layers = keras0.layer_list(config, path)
    if keras0.generation(config, layers, path) != "0.2":
        raise ExportError(f"{path}: not a Keras 0.2 architecture")
    if config.get("name") != "Sequential":
        raise ExportError(f"{path}: Keras 0.2 model {config.get('name')!r} is not a Sequential model")
    out = keras1.Keras1Model(config={}, path=path)
    translated = []
    for i, entry in enumerate(keras0.keras1_entries(layers)):
        cls, cfg = entry["class_name"], entry["config"]
        where = f"{path}: layer {cfg['name']!r}"
        if cls not in DEFAULTS and cls not in OTHER_LAYERS:
            raise ExportError(f"{where}: class {cls!r} is not a layer seqserve can export from Keras 0.2")
        if cls in DEFAULTS:
            act, inner = DEFAULTS[cls]
            cfg = {"activation": act, **({"inner_activation": inner} if inner else {}), **cfg}
        if cls in ONLY_IN_KERAS02:
            new = {"class_name": cls, "config": _keras02_only(cls, cfg, where, first=i == 0)}
        else:
            new = keras1.translate_entry({"class_name": cls, "config": cfg}, out, first=i == 0)
        if cls in DEFAULTS:
            new["config"]["keras02_masking"] = True
        translated.append(new)
    out.config = {"class_name": "Sequential", "config": {"name": "sequential", "layers": translated}}
    return out


def _keras02_only(cls: str, cfg: dict[str, Any], where: str, first: bool) -> dict[str, Any]:
    """SimpleDeepRNN / JZS1-3 in the Keras 2 form of a recurrent layer (units, activations...)."""
    new = keras1.translate_config("SimpleRNN", cfg, where, first)  # the shape, units and return_sequences logic
    new["recurrent_activation"] = cfg["inner_activation"]
    if cls == "SimpleDeepRNN":
        depth = cfg.get("depth", 3)
        if type(depth) is not int or depth < 1:
            raise ExportError(f"{where}: SimpleDeepRNN depth must be a positive integer, got {depth!r}")
        new["depth"] = depth
    return new
