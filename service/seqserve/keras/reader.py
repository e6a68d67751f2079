"""Read `.keras` (Keras 3 zip) and legacy full-model `.h5` files, and `to_json()` / `to_yaml()`
architectures with their `save_weights` file, into a `KerasModel` (Keras 0.3 and 1 files through
`seqserve.keras.keras0` / `keras02` / `keras1`, which turn them into the Keras 2 form).

Only zipfile, json, safe YAML and h5py touch the file; no Keras, no TensorFlow, no code from the model file.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from seqserve.errors import ExportError
from seqserve.keras import keras0, keras02, keras1
from seqserve.keras.architecture import read_architecture
from seqserve.keras.config import parse_model_config
from seqserve.keras.isolation import ReaderCrashed, ReaderTimedOut, call_isolated
from seqserve.keras.model import KerasModel, Layer

# Sub-objects of a Keras 3 layer, in the order their weights appear in `layer.get_weights()`.
_CHILD_ORDER = ("cell", "forward_layer", "backward_layer", "layer", "cells")


# What a model file may make the reader allocate. A zip entry's declared size is checked before it
# is inflated (zipfile never returns more than it declares); a weight's declared size before it is read.
MAX_JSON_BYTES = 64 * 2**20
MAX_WEIGHTS_BYTES = 8 * 2**30
MAX_WEIGHT_BYTES = 2 * 2**30
# Real weights barely compress (random floats); 1 GiB of zeros deflates to 1 MiB. Above this ratio,
# and this size, an entry is a zip bomb. An HDF5 dataset likewise may declare far more than it stores.
MAX_INFLATION = 100
_SMALL = 16 * 2**20

# The reading runs in a child process (seqserve.keras.isolation) under these limits: libhdf5 can
# crash or loop on a damaged file. The memory limit is above every per-entry limit here.
READ_TIMEOUT_SECONDS = 300.0
READ_MEMORY_BYTES = 3 * MAX_WEIGHTS_BYTES

# What a malformed file makes zipfile, json, h5py and the config walk raise (h5py reports corrupt
# objects as RuntimeError; a deeply nested JSON document is a RecursionError).
_MALFORMED = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    RuntimeError,
)


# An architecture written by to_json()/to_yaml(), read with the weights file given beside it.
ARCHITECTURE_SUFFIXES = (".json", ".yaml", ".yml")


def load_keras_model(src: str | Path, weights: str | Path | None = None) -> KerasModel:
    """Read a `.keras` or `.h5` model file, or a tf.keras SavedModel directory. Raises ExportError
    (naming the file) on any bad input. `weights`: the `save_weights` file of an architecture
    file (`.json` / `.yaml` from Keras 1 or 2's to_json() / to_yaml())."""
    path = Path(src)
    if path.is_dir():
        if weights is not None:
            raise ExportError(f"{path}: a SavedModel directory carries its weights; --weights goes with a .json/.yaml")
        return _read_directory(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(8)
    args: tuple[Path, ...] = (path,)
    if magic.startswith(b"PK") or magic == b"\x89HDF\r\n\x1a\n":
        if weights is not None:
            raise ExportError(
                f"{path}: a whole-model file carries its weights; --weights goes with a .json/.yaml architecture"
            )
        read = _read_keras3 if magic.startswith(b"PK") else _read_h5
    elif weights is not None or path.suffix.lower() in ARCHITECTURE_SUFFIXES:
        if weights is None:
            raise ExportError(f"{path}: an architecture file needs its weights file (--weights)")
        if not Path(weights).is_file():
            raise ExportError(f"{weights}: no such weights file")
        read, args = _read_architecture, (path, Path(weights))
    else:
        raise ExportError(f"{path}: not a Keras file (neither a .keras zip nor an HDF5 .h5 file)")
    try:
        return call_isolated(read, *args, timeout=READ_TIMEOUT_SECONDS, memory_bytes=READ_MEMORY_BYTES)
    except ReaderCrashed as e:
        raise ExportError(f"{path}: the file crashed the reader ({e}); it is corrupt") from None
    except ReaderTimedOut:
        raise ExportError(
            f"{path}: reading the file did not finish in {READ_TIMEOUT_SECONDS:g} s; it is corrupt "
            "(a damaged HDF5 file can make the HDF5 library loop forever)"
        ) from None
    except MemoryError:
        raise ExportError(f"{path}: reading the file needs more than {READ_MEMORY_BYTES:,} bytes of memory") from None
    except ExportError as e:
        if str(path) in e.message:
            raise
        raise ExportError(f"{path}: {e.message}") from None
    except RecursionError:
        raise ExportError(f"{path}: the model config is nested too deeply to be a Keras model") from None
    except _MALFORMED as e:
        kind = {
            _read_keras3: "corrupt or truncated .keras file",
            _read_architecture: "corrupt architecture or weights file",
        }.get(read, "corrupt or truncated .h5 file")
        raise ExportError(f"{path}: {kind} ({type(e).__name__}: {_one_line(e)})") from None


def _read_directory(path: Path) -> KerasModel:
    """A tf.keras SavedModel directory. Only plain, bounded file reads (no HDF5): no child process."""
    from seqserve.keras.savedmodel import is_savedmodel_dir, read_savedmodel  # it imports this module

    if not is_savedmodel_dir(path):
        raise ExportError(f"{path}: a directory, but not a SavedModel (no saved_model.pb)")
    try:
        return read_savedmodel(path)
    except RecursionError:
        raise ExportError(f"{path}: the model config is nested too deeply to be a Keras model") from None
    except _MALFORMED as e:
        raise ExportError(f"{path}: corrupt SavedModel directory ({type(e).__name__}: {_one_line(e)})") from None


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else "no detail"


# ----------------------------------------------------------------------------------------- keras 3


def _read_entry(zf: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """One archive member, refused on its declared size or its inflation before a byte is inflated."""
    info = zf.getinfo(name)
    if info.file_size > limit:
        raise ExportError(f"{name} declares {info.file_size:,} bytes, over the limit of {limit:,}")
    if info.file_size > _SMALL and info.file_size > MAX_INFLATION * max(info.compress_size, 1):
        raise ExportError(
            f"{name} inflates {info.compress_size:,} bytes into {info.file_size:,} (a zip bomb?); "
            f"refused above {MAX_INFLATION}x"
        )
    return zf.read(name)


def _read_keras3(path: Path) -> KerasModel:
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        if "config.json" not in names:
            raise ExportError(f"{path}: .keras archive has no config.json")
        config = json.loads(_read_entry(zf, "config.json", MAX_JSON_BYTES))
        meta = json.loads(_read_entry(zf, "metadata.json", MAX_JSON_BYTES)) if "metadata.json" in names else {}
        weights_blob = _read_entry(zf, "model.weights.h5", MAX_WEIGHTS_BYTES) if "model.weights.h5" in names else None
    if not isinstance(meta, dict):
        meta = {}
    name, layers, inputs, outputs = parse_model_config(config, str(path))
    if weights_blob is None:
        if any(_expects_weights(layer) for layer in layers):
            raise ExportError(f"{path}: .keras archive has no model.weights.h5")
    else:
        try:
            with h5py.File(io.BytesIO(weights_blob), "r") as h5:
                _attach_keras3_weights(h5, layers, path)
        except ExportError:
            raise
        except _MALFORMED as e:
            raise ExportError(f"{path}: corrupt model.weights.h5 ({type(e).__name__}: {_one_line(e)})") from None
    return KerasModel(
        path=str(path),
        format="keras3",
        keras_version=str(meta.get("keras_version", "3")),
        backend=str(meta.get("backend")) if meta.get("backend") else "unknown",
        name=name,
        layers=layers,
        inputs=inputs,
        outputs=outputs,
    )


def _weight(dataset: Any, path: Path, layer: str) -> np.ndarray:
    """A weight's values, refused on its declared size before HDF5 allocates it."""
    if not isinstance(dataset, h5py.Dataset):
        raise ExportError(f"{path}: layer {layer!r}: weight {getattr(dataset, 'name', '?')!r} is not a dataset")
    declared = int(dataset.size) * dataset.dtype.itemsize
    stored = dataset.id.get_storage_size()
    if declared > MAX_WEIGHT_BYTES or (declared > _SMALL and declared > MAX_INFLATION * max(stored, 1)):
        raise ExportError(
            f"{path}: layer {layer!r}: weight {dataset.name!r} declares shape {list(dataset.shape)} "
            f"({declared:,} bytes) but the file stores {stored:,} bytes of it"
        )
    return np.asarray(dataset[()])


def _expects_weights(layer: Layer) -> bool:
    return layer.class_name not in {
        "_Alias",
        "_Outputs",
        "InputLayer",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "Activation",
        "Masking",
        "Flatten",
        "Reshape",
        "RepeatVector",
        "Concatenate",
        "Add",
    }


def _attr_name(group: h5py.Group) -> str | None:
    vars_group = group.get("vars")
    if isinstance(vars_group, h5py.Group):
        name = vars_group.attrs.get("name")
        if isinstance(name, bytes):
            name = name.decode()
        return str(name) if name is not None else None
    return None


def _snake(name: str) -> str:
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def _attach_keras3_weights(h5: h5py.File, layers: list[Layer], path: Path) -> None:
    root = h5.get("layers")
    groups: dict[str, h5py.Group] = {}

    def collect(parent: h5py.Group) -> None:
        for key in parent:
            g = parent[key]
            if isinstance(g, h5py.Group):
                groups.setdefault(_attr_name(g) or key, g)
                inner = g.get("layers")
                if isinstance(inner, h5py.Group):  # a nested model: its layers are inlined
                    collect(inner)

    if isinstance(root, h5py.Group):
        collect(root)
    # Files whose groups carry no name attribute: Keras names them after the class, in layer order.
    counts: dict[str, int] = {}
    for layer in layers:
        base = _snake(layer.class_name)
        n = counts.get(base, 0)
        counts[base] = n + 1
        group = groups.get(layer.name)
        if group is None and root is not None:
            key = base if n == 0 else f"{base}_{n}"
            candidate = root.get(key)
            if isinstance(candidate, h5py.Group) and _attr_name(candidate) is None:
                group = candidate
        if group is not None:
            layer.weights = _flatten_keras3(group, layer.config, path, layer.name)


def _flatten_keras3(group: h5py.Group, config: dict[str, Any], path: Path, layer: str) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    vars_group = group.get("vars")
    if isinstance(vars_group, h5py.Group):
        for key in sorted(vars_group, key=lambda k: int(k) if k.isdigit() else 1 << 30):
            out.append(_weight(vars_group[key], path, layer))
    children = [k for k in group if k != "vars" and isinstance(group[k], h5py.Group)]
    ordered = [k for k in _CHILD_ORDER if k in children] + sorted(k for k in children if k not in _CHILD_ORDER)
    for key in ordered:
        child = group[key]
        if key == "cells":
            out.extend(_flatten_cells(child, config, path, layer))
        else:
            out.extend(_flatten_keras3(child, _sub_config(config, key), path, layer))
    return out


def _sub_config(config: dict[str, Any], key: str) -> dict[str, Any]:
    sub = config.get(key)
    if isinstance(sub, dict):
        return sub.get("config") or {}
    return {}


def _flatten_cells(group: h5py.Group, config: dict[str, Any], path: Path, layer: str) -> list[np.ndarray]:
    """StackedRNNCells: Keras 3 names the cell groups by class; order them as the config lists the cells."""
    cells = config.get("cells") or []
    wanted = [((c.get("config") or {}).get("name")) for c in cells]
    by_name = {}
    for key in group:
        by_name[_attr_name(group[key]) or key] = group[key]
    out: list[np.ndarray] = []
    for i, name in enumerate(wanted):
        g = by_name.get(name)
        if g is None:
            raise ExportError(f"{path}: layer {layer!r}: no weights for cell {i} ({name!r}) of StackedRNNCells")
        out.extend(_flatten_keras3(g, (cells[i].get("config") or {}), path, layer))
    return out


# ------------------------------------------------------------------------------------- legacy h5


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _read_h5(path: Path) -> KerasModel:
    try:
        with h5py.File(path, "r") as h5:
            if "model_config" not in h5.attrs:
                raise ExportError(f"{path}: HDF5 file has no model_config (a weights-only file cannot be exported)")
            config = json.loads(_text(h5.attrs["model_config"]))
            weights_root = h5.get("model_weights", h5)
            version = h5.attrs.get("keras_version", getattr(weights_root, "attrs", {}).get("keras_version"))
            backend = _text(h5.attrs.get("backend", "unknown"))
            return _legacy_model(
                path,
                "h5",
                config,
                None if version is None else _text(version),
                backend,
                lambda layer: _legacy_layer_weights(weights_root, layer, path),
            )
    except ExportError:
        raise
    except _MALFORMED as e:
        raise ExportError(f"{path}: corrupt or truncated .h5 file ({type(e).__name__}: {_one_line(e)})") from None


def _read_architecture(path: Path, weights: Path) -> KerasModel:
    """A to_json()/to_yaml() architecture and its save_weights file (the layout of an .h5's model_weights)."""
    config = read_architecture(path, MAX_JSON_BYTES)
    fmt = "yaml" if path.suffix.lower() in (".yaml", ".yml") else "json"
    with h5py.File(weights, "r") as h5:
        if keras0.is_keras02(config, str(path)):
            old = keras02.translate(config, str(path))
            names = [e["config"]["name"] for e in old.config["config"]["layers"]]
            by_position = _keras0_weights(h5, names, path, weights)
            return _legacy_model(
                path, f"{fmt}+h5", old.config, "0.2", "theano", lambda layer: by_position.get(layer.name, []), old
            )
        if keras0.is_keras0(config):
            config = keras0.to_keras1(config, str(path))
            by_position = _keras0_weights(h5, [e["config"]["name"] for e in config["config"]], path, weights)
            return _legacy_model(
                path, f"{fmt}+h5", config, "0.3", "theano", lambda layer: by_position.get(layer.name, [])
            )
        if "layer_names" not in h5.attrs:
            raise ExportError(f"{path}: {weights} is not a Keras 1/2 save_weights file (no layer_names)")
        version = config.get("keras_version", h5.attrs.get("keras_version"))
        backend = _text(config.get("backend", h5.attrs.get("backend", "unknown")))
        return _legacy_model(
            path,
            f"{fmt}+h5",
            config,
            None if version is None else _text(version),
            backend,
            lambda layer: _legacy_layer_weights(h5, layer, path),
        )


def _keras0_weights(h5: h5py.File, names: list[str], path: Path, weights: Path) -> dict[str, list[np.ndarray]]:
    """Keras 0.x save_weights: `layer_<k>/param_<n>` by position, no names (HDF5 lists param_10 before param_2)."""
    if "nb_layers" not in h5.attrs or int(h5.attrs["nb_layers"]) != len(names):
        raise ExportError(f"{path}: {weights} is not the Keras 0.x save_weights file of this {len(names)}-layer model")
    out = {}
    for k, name in enumerate(names):
        group = h5[f"layer_{k}"]
        out[name] = [_weight(group[f"param_{n}"], path, name) for n in range(int(group.attrs["nb_params"]))]
    return out


def _legacy_model(
    path: Path,
    fmt: str,
    config: Any,
    version: str | None,
    backend: str,
    weights_of: Callable[[Layer], list[np.ndarray]],
    translated: keras1.Keras1Model | None = None,
) -> KerasModel:
    """A Keras 1 or 2 model config and its weights (Keras 1 ones translated into Keras 2 form;
    `translated`: a config already in Keras 2 form, e.g. Keras 0.2's, and its weight translation)."""
    keras_1 = translated
    if keras_1 is None and keras1.is_keras1(config, version, str(path)):
        keras_1 = keras1.translate(config, str(path))
    name, layers, inputs, outputs = parse_model_config(keras_1.config if keras_1 else config, str(path))
    for layer in layers:
        layer.weights = weights_of(layer)
        if keras_1 is not None:
            layer.weights = keras_1.weights(layer.name, layer.weights)
        _canonical_cudnn(layer)
        if backend == "theano":
            layer.weights = _theano_kernels(layer.class_name, layer.config, layer.weights)
    return KerasModel(
        path=str(path),
        format=fmt,
        keras_version=version or ("1" if keras_1 else "2"),
        backend=backend,
        name=name,
        layers=layers,
        inputs=inputs,
        outputs=outputs,
    )


def _legacy_layer_weights(root: h5py.Group, layer: Layer, path: Path) -> list[np.ndarray]:
    group = root.get(layer.name)
    prefix = ""
    if not isinstance(group, h5py.Group) and layer.parent is not None:
        # Inlined from a nested model: its weights are listed under the nested model's group.
        group, prefix = root.get(layer.parent), f"{layer.name}/"
    if not isinstance(group, h5py.Group):
        return []
    names = [_text(n) for n in group.attrs.get("weight_names", [])]
    if prefix:
        names = [n for n in names if n.startswith(prefix)]
    out = []
    for n in names:
        try:
            out.append(_weight(group[n], path, layer.name))
        except KeyError:
            raise ExportError(f"{path}: layer {layer.name!r}: weight {n!r} is listed but missing") from None
    return out


def _canonical_cudnn(layer: Layer) -> None:
    """Keras 2 CuDNNLSTM/CuDNNGRU weights -> the LSTM / GRU(reset_after=True) layout, as tf.keras'
    own weight conversion does (also inside Bidirectional). Other layers are left alone."""
    cls, cfg, weights = layer.class_name, layer.config, layer.weights
    if cls == "Bidirectional":
        inner = cfg.get("layer") or {}
        if inner.get("class_name") in ("CuDNNLSTM", "CuDNNGRU") and len(weights) == 6:
            units = int((inner.get("config") or {}).get("units", 0))
            layer.weights = _cudnn_weights(inner["class_name"], units, weights[:3]) + _cudnn_weights(
                inner["class_name"], units, weights[3:]
            )
        return
    if cls in ("CuDNNLSTM", "CuDNNGRU") and len(weights) == 3:
        layer.weights = _cudnn_weights(cls, int(cfg.get("units", 0)), weights)


def _cudnn_weights(cls: str, units: int, weights: list[np.ndarray]) -> list[np.ndarray]:
    kernel, recurrent, bias = weights
    gates = 4 if cls == "CuDNNLSTM" else 3
    if units <= 0 or kernel.ndim != 2 or kernel.shape[1] != gates * units or bias.shape != (2 * gates * units,):
        return weights  # leave it to the converter's shape check, which names the layer
    input_dim = kernel.shape[0]
    # Each stored input-kernel gate block is cuDNN's (units, input_dim) matrix flattened row-major
    # into an (input_dim, units) array: reshape, do not transpose. Recurrent blocks are transposed.
    k = np.concatenate(
        [kernel[:, g * units : (g + 1) * units].reshape(units, input_dim).T for g in range(gates)], axis=1
    )
    r = np.concatenate([recurrent[:, g * units : (g + 1) * units].T for g in range(gates)], axis=1)
    # LSTM: input and recurrent biases summed; GRU: rows of GRU(reset_after=True)'s (2, 3*units) bias.
    b = bias[: 4 * units] + bias[4 * units :] if cls == "CuDNNLSTM" else bias.reshape(2, 3 * units)
    return [np.ascontiguousarray(k), np.ascontiguousarray(r), b]


# Layers whose first weights are convolution kernels (*window, in, out): Conv's kernel; ConvLSTM's
# kernel and recurrent kernel.
_CONV_KERNELS = {"Conv1D": 1, "Conv2D": 1, "Conv3D": 1, "ConvLSTM1D": 2, "ConvLSTM2D": 2, "ConvLSTM3D": 2}


def _theano_kernels(cls: str, config: dict[str, Any], weights: list[np.ndarray]) -> list[np.ndarray]:
    """Kernels of a file saved by Keras on Theano, as every other backend stores them. Theano's
    conv2d/conv3d compute a true convolution (the kernel flipped on its spatial axes), TF and the
    others a cross-correlation: the same stored numbers mean the mirrored filter. Keras' own loader
    flips them when the file's backend differs from its own; so do we (the exporter handles the
    other Theano difference, the side an even 'same' kernel pads on: ConvGeometry.leading_odd_pad)."""
    if cls == "TimeDistributed" or cls == "Bidirectional":
        inner = config.get("layer") or {}
        inner_cls, inner_cfg = str(inner.get("class_name")), inner.get("config") or {}
        if cls == "TimeDistributed":
            return _theano_kernels(inner_cls, inner_cfg, weights)
        half = len(weights) // 2
        return _theano_kernels(inner_cls, inner_cfg, weights[:half]) + _theano_kernels(
            inner_cls, inner_cfg, weights[half:]
        )
    out = list(weights)
    for i in range(min(_CONV_KERNELS.get(cls, 0), len(out))):
        if out[i].ndim >= 3:
            out[i] = np.ascontiguousarray(np.flip(out[i], axis=tuple(range(out[i].ndim - 2))))
    return out
