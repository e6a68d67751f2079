"""Read `.keras` (Keras 3 zip) and legacy full-model `.h5` files into a `KerasModel`.

Only zipfile, json and h5py touch the file; no Keras, no TensorFlow, no code from the model file.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from seqserve.errors import ExportError
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


def load_keras_model(src: str | Path) -> KerasModel:
    """Read a `.keras` or `.h5` model file. Raises ExportError (naming the file) on any bad input."""
    path = Path(src)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    with open(path, "rb") as f:
        magic = f.read(8)
    if magic.startswith(b"PK"):
        read = _read_keras3
    elif magic == b"\x89HDF\r\n\x1a\n":
        read = _read_h5
    else:
        raise ExportError(f"{path}: not a Keras file (neither a .keras zip nor an HDF5 .h5 file)")
    try:
        return call_isolated(read, path, timeout=READ_TIMEOUT_SECONDS, memory_bytes=READ_MEMORY_BYTES)
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
        kind = "corrupt or truncated .keras file" if read is _read_keras3 else "corrupt or truncated .h5 file"
        raise ExportError(f"{path}: {kind} ({type(e).__name__}: {_one_line(e)})") from None


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
            version = _text(h5.attrs.get("keras_version", "2"))
            backend = _text(h5.attrs.get("backend", "unknown"))
            name, layers, inputs, outputs = parse_model_config(config, str(path))
            weights_root = h5.get("model_weights", h5)
            if "keras_version" in getattr(weights_root, "attrs", {}) and "keras_version" not in h5.attrs:
                version = _text(weights_root.attrs["keras_version"])
            for layer in layers:
                layer.weights = _legacy_layer_weights(weights_root, layer, path)
                _canonical_cudnn(layer)
    except ExportError:
        raise
    except _MALFORMED as e:
        raise ExportError(f"{path}: corrupt or truncated .h5 file ({type(e).__name__}: {_one_line(e)})") from None
    return KerasModel(
        path=str(path),
        format="h5",
        keras_version=version,
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
