"""Read a tf.keras 2.x SavedModel directory (`model.save("dir")`) into a `KerasModel`, without TensorFlow.

The model config is the root object's JSON in `keras_metadata.pb`; the weights come from the
variables' tensor bundle, matched to layers through the checkpoint's object graph (the layer's
`variables` list where the SavedModel kept one, else its named variables and sub-layers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqserve.errors import ExportError
from seqserve.keras.config import parse_model_config
from seqserve.keras.model import KerasModel, Layer
from seqserve.keras.protowire import WireError, all_bytes, first_bytes, first_int, parse_message
from seqserve.keras.reader import MAX_JSON_BYTES, MAX_WEIGHT_BYTES, MAX_WEIGHTS_BYTES
from seqserve.keras.tensor_bundle import BundleError, TensorBundle

METADATA_FILE = "keras_metadata.pb"
SAVED_MODEL_FILE = "saved_model.pb"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VARIABLE_ATTRIBUTE = "VARIABLE_VALUE"

# Sub-layers whose weights follow their parent's in `get_weights()`, in this order.
_SUB_LAYERS = ("cell", "forward_layer", "backward_layer", "layer", "cells")
# A layer's own variables in the order Keras creates them (where no `variables` list says it).
_VARIABLE_ORDER = (
    "embeddings",
    "kernel",
    "depthwise_kernel",
    "pointwise_kernel",
    "recurrent_kernel",
    "bias",
    "gamma",
    "beta",
    "moving_mean",
    "moving_variance",
)


def is_savedmodel_dir(path: Path) -> bool:
    return path.is_dir() and (path / SAVED_MODEL_FILE).is_file()


@dataclass
class _SavedObject:
    """One node of keras_metadata.pb: its path from the root ("root.layer_with_weights-0.cell")
    and its Keras metadata JSON."""

    path: str
    identifier: str
    metadata: dict[str, Any]


def read_savedmodel(path: Path) -> KerasModel:
    """The model of a SavedModel directory written by tf.keras. Raises ExportError on any bad input."""
    if not (path / SAVED_MODEL_FILE).is_file():
        raise ExportError(f"{path}: directory is not a SavedModel (no {SAVED_MODEL_FILE})")
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        raise ExportError(
            f"{path}: SavedModel has no {METADATA_FILE}: it was not written by Keras' model.save(), "
            "so it holds no Keras model config to export"
        )
    try:
        objects = _read_metadata(meta_file)
        root = next((o for o in objects if o.path == "root"), None)
        if root is None or not isinstance(root.metadata.get("config"), dict):
            raise ExportError(f"{METADATA_FILE} has no root model config")
        name, layers, inputs, outputs = parse_model_config(root.metadata, str(path))
        bundle = TensorBundle(path / "variables" / "variables")
        graph = (
            _ObjectGraph(bundle.read_string(OBJECT_GRAPH_KEY, MAX_JSON_BYTES))
            if OBJECT_GRAPH_KEY in bundle.entries
            else None
        )
        _attach_weights(layers, objects, graph, bundle)
    except ExportError as e:
        raise ExportError(e.message if str(path) in e.message else f"{path}: {e.message}") from None
    except BundleError as e:
        raise ExportError(f"{path}: variables: {e}") from None
    except (WireError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: malformed {METADATA_FILE} ({e})") from None
    return KerasModel(
        path=str(path),
        format="savedmodel",
        keras_version=str(root.metadata.get("keras_version", "2")),
        backend=str(root.metadata.get("backend", "tensorflow")),
        name=name,
        layers=layers,
        inputs=inputs,
        outputs=outputs,
    )


def _read_metadata(meta_file: Path) -> list[_SavedObject]:
    size = meta_file.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ExportError(f"{METADATA_FILE} is {size:,} bytes, over the limit of {MAX_JSON_BYTES:,}")
    objects = []
    for node in all_bytes(parse_message(meta_file.read_bytes()), 1):
        fields = parse_message(node)
        identifier = first_bytes(fields, 4).decode("utf-8")
        if not identifier.startswith("_tf_keras"):
            continue
        metadata = json.loads(first_bytes(fields, 5).decode("utf-8") or "{}", object_hook=_untuple)
        if isinstance(metadata, dict):
            objects.append(_SavedObject(first_bytes(fields, 3).decode("utf-8"), identifier, metadata))
    if not objects:
        raise ExportError(f"{METADATA_FILE} describes no Keras objects")
    return objects


def _untuple(obj: dict[str, Any]) -> Any:
    """tf.keras writes tuples in SavedModel metadata as {"class_name": "__tuple__", "items": [...]}."""
    if obj.get("class_name") == "__tuple__" and isinstance(obj.get("items"), list) and len(obj) == 2:
        return obj["items"]
    return obj


class _ObjectGraph:
    """The checkpoint's object graph: each node's named children and its variable's checkpoint key."""

    def __init__(self, data: bytes) -> None:
        self.children: list[list[tuple[str, int]]] = []
        self.keys: list[str | None] = []
        for node in all_bytes(parse_message(data), 1):
            fields = parse_message(node)
            refs = [parse_message(c) for c in all_bytes(fields, 1)]
            self.children.append([(first_bytes(r, 2).decode("utf-8"), first_int(r, 1)) for r in refs])
            key = None
            for attribute in all_bytes(fields, 2):
                a = parse_message(attribute)
                if first_bytes(a, 1).decode("utf-8") == VARIABLE_ATTRIBUTE:
                    key = first_bytes(a, 3).decode("utf-8")
            self.keys.append(key)
        if not self.children:
            raise ExportError(f"variables: {OBJECT_GRAPH_KEY} has no nodes")

    def child(self, node: int, name: str) -> int | None:
        for local, target in self.children[node]:
            if local == name:
                if not 0 <= target < len(self.children):
                    raise ExportError(f"variables: object graph refers to node {target} of {len(self.children)}")
                return target
        return None

    def walk(self, dotted: str) -> int | None:
        node: int | None = 0
        for part in dotted.split(".")[1:]:
            node = self.child(node, part) if node is not None else None
        return node

    def variable_keys(self, node: int, where: str, seen: set[int] | None = None) -> list[str]:
        """Checkpoint keys of a layer's weights in `get_weights()` order."""
        seen = set() if seen is None else seen
        if node in seen:  # Keras sub-layers form a tree; a damaged graph could loop or fan out
            raise ExportError(f"variables: {where}: the object graph reaches sub-layer node {node} twice")
        seen.add(node)
        listed = self.child(node, "variables")
        if listed is not None:
            refs = self.children[listed]
            if all(name.isdigit() for name, _ in refs):
                keys = [
                    self.keys[t] if 0 <= t < len(self.keys) else None for _, t in sorted(refs, key=lambda r: int(r[0]))
                ]
                if any(k is None for k in keys):
                    raise ExportError(f"variables: {where}: a listed variable has no saved value")
                return [k for k in keys if k is not None]
        own: list[tuple[int, str]] = []
        subs: list[tuple[tuple[int, int], int]] = []
        for name, target in self.children[node]:
            if not 0 <= target < len(self.keys):
                raise ExportError(f"variables: object graph refers to node {target} of {len(self.keys)}")
            key = self.keys[target]
            if key is not None:
                if name not in _VARIABLE_ORDER:
                    raise ExportError(
                        f"variables: {where}: variable {name!r} is not one whose place in get_weights() is known"
                    )
                own.append((_VARIABLE_ORDER.index(name), key))
            elif name == "cells":
                subs.extend(((len(_SUB_LAYERS), int(n)), t) for n, t in self.children[target] if n.isdigit())
            elif name in _SUB_LAYERS:
                subs.append(((_SUB_LAYERS.index(name), 0), target))
        out = [key for _, key in sorted(own)]
        for _, target in sorted(subs):
            out.extend(self.variable_keys(target, where, seen))
        return out


def _attach_weights(
    layers: list[Layer], objects: list[_SavedObject], graph: _ObjectGraph | None, bundle: TensorBundle
) -> None:
    total = 0
    for layer in layers:
        saved = _saved_object(layer, objects)
        if saved is None:
            continue
        if graph is None:
            raise ExportError(f"variables: no {OBJECT_GRAPH_KEY} to find layer {layer.name!r}'s weights in")
        node = graph.walk(saved.path)
        if node is None and "layer_with_weights" not in saved.path:
            continue  # a weightless layer the checkpoint did not need to record
        if node is None:
            raise ExportError(f"variables: layer {layer.name!r} ({saved.path}) is not in the checkpoint's object graph")
        weights: list[np.ndarray] = []
        for key in graph.variable_keys(node, f"layer {layer.name!r}"):
            if key not in bundle.entries:
                raise ExportError(f"variables: layer {layer.name!r}: no tensor {key!r} in variables.index")
            weights.append(bundle.read_float32(key, MAX_WEIGHT_BYTES))
            total += weights[-1].nbytes
            if total > MAX_WEIGHTS_BYTES:
                raise ExportError(f"variables: the weights exceed the limit of {MAX_WEIGHTS_BYTES:,} bytes")
        layer.weights = weights


def _saved_object(layer: Layer, objects: list[_SavedObject]) -> _SavedObject | None:
    """The metadata node of a config layer: same name and class, the shortest path (a cell or a
    wrapped layer deeper down may share the name)."""
    found = [
        o
        for o in objects
        if o.path != "root"
        and o.metadata.get("name") == layer.name
        and o.metadata.get("class_name") == layer.class_name
    ]
    return min(found, key=lambda o: o.path.count("."), default=None)
