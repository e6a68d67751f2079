"""Bad model files: a one-line ExportError naming the file (and the layer where there is one),
and the model store left exactly as it was."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras import layers

from seqserve.errors import ExportError
from seqserve.export import export_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "keras2"


def _snapshot(store: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(store)), p.stat().st_size if p.is_file() else -1) for p in store.rglob("*"))


@pytest.fixture(scope="module")
def good_keras(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("good") / "good.keras"
    model = keras.Sequential([keras.Input((5, 3)), layers.LSTM(4, name="lstm"), layers.Dense(2, name="dense")])
    model.save(path)
    return path


@pytest.fixture()
def store(tmp_path, good_keras) -> Path:
    """A store that already holds version 1 of 'm' (the bad export must leave it alone)."""
    store = tmp_path / "store"
    export_model(good_keras, "m", store=store, progress=False)
    return store


def _rewrite_keras(src: Path, dst: Path, edit_config=None, edit_weights=None) -> Path:
    with zipfile.ZipFile(src) as zin:
        files = {n: zin.read(n) for n in zin.namelist()}
    if edit_config:
        cfg = json.loads(files["config.json"])
        edit_config(cfg)
        files["config.json"] = json.dumps(cfg).encode()
    if edit_weights:
        wpath = dst.parent / "w.h5"
        wpath.write_bytes(files["model.weights.h5"])
        with h5py.File(wpath, "r+") as h5:
            edit_weights(h5)
        files["model.weights.h5"] = wpath.read_bytes()
    with zipfile.ZipFile(dst, "w") as zout:
        for n, data in files.items():
            zout.writestr(n, data)
    return dst


def _layer_cfg(cfg, name):
    return next(layer for layer in cfg["config"]["layers"] if layer["config"].get("name") == name)


def _expect_error(src: Path, store: Path, *needles: str) -> None:
    before = _snapshot(store)
    with pytest.raises(ExportError) as info:
        export_model(src, "m", store=store, progress=False)
    message = str(info.value)
    assert "\n" not in message
    assert src.name in message
    for needle in needles:
        assert needle in message, message
    assert _snapshot(store) == before
    with pytest.raises(ExportError):  # also into a model that does not exist yet: no directory left
        export_model(src, "fresh", store=store, progress=False)
    assert not (store / "fresh").exists()


def test_corrupt_file_is_rejected(tmp_path, store):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"this is not a model at all")
    _expect_error(bad, store, "not a Keras file")


def test_truncated_keras_zip_is_rejected(tmp_path, store, good_keras):
    data = good_keras.read_bytes()
    bad = tmp_path / "truncated.keras"
    bad.write_bytes(data[: len(data) // 2])
    _expect_error(bad, store, "corrupt or truncated")


def test_truncated_h5_is_rejected(tmp_path, store):
    data = (FIXTURES / "simple_rnn.h5").read_bytes()
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(data[: len(data) // 2])
    _expect_error(bad, store, "corrupt or truncated")


def test_missing_weight_names_the_layer(tmp_path, store, good_keras):
    def drop(h5):
        for key in h5["layers"]:
            if h5["layers"][key]["vars"].attrs.get("name") == "lstm":
                del h5["layers"][key]["cell"]["vars"]["1"]

    bad = _rewrite_keras(good_keras, tmp_path / "missing.keras", edit_weights=drop)
    _expect_error(bad, store, "'lstm'", "missing")


def test_weight_shape_not_matching_config_names_the_layer(tmp_path, store, good_keras):
    bad = _rewrite_keras(
        good_keras, tmp_path / "shape.keras", edit_config=lambda c: _layer_cfg(c, "dense")["config"].update(units=3)
    )
    _expect_error(bad, store, "'dense'", "shape")


def test_unknown_custom_layer_names_the_layer(tmp_path, store, good_keras):
    def custom(cfg):
        entry = _layer_cfg(cfg, "dense")
        entry["class_name"] = "MyFancyLayer"
        entry["module"] = "my_package.layers"

    bad = _rewrite_keras(good_keras, tmp_path / "custom.keras", edit_config=custom)
    _expect_error(bad, store, "'dense'", "MyFancyLayer")


def test_lambda_layer_is_refused_without_running_it(tmp_path, store):
    model = keras.Sequential([keras.Input((5, 3)), layers.Lambda(lambda t: t * 2, name="doubler"), layers.LSTM(2)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    _expect_error(path, store, "'doubler'", "Lambda")


def test_custom_rnn_cell_is_refused(tmp_path, store, good_keras):
    def custom(cfg):
        _layer_cfg(cfg, "lstm")["class_name"] = "RNN"
        _layer_cfg(cfg, "lstm")["config"]["cell"] = {"class_name": "MyCell", "config": {"units": 4}}

    bad = _rewrite_keras(good_keras, tmp_path / "cell.keras", edit_config=custom)
    _expect_error(bad, store, "'lstm'", "MyCell")


def test_weights_only_h5_is_rejected(tmp_path, store):
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("kernel", data=np.zeros((2, 2)))
    _expect_error(path, store, "model_config")


def test_missing_file_is_rejected(tmp_path, store):
    with pytest.raises(ExportError, match="no such file"):
        export_model(tmp_path / "nope.keras", "m", store=store, progress=False)


def test_existing_version_is_an_error_and_keeps_it(tmp_path, store, good_keras):
    before = _snapshot(store)
    with pytest.raises(ExportError, match="already exists"):
        export_model(good_keras, "m", store=store, version=1, progress=False)
    assert _snapshot(store) == before


def test_failure_while_writing_leaves_no_temp_dir(tmp_path, store, good_keras, monkeypatch):
    import seqserve.export.api as api

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(api.os, "rename", boom)
    before = _snapshot(store)
    with pytest.raises(OSError):
        export_model(good_keras, "m", store=store, progress=False)
    assert _snapshot(store) == before
    shutil.rmtree(tmp_path / "unused", ignore_errors=True)


def _h5_copy(tmp_path: Path, name: str) -> Path:
    dst = tmp_path / f"{name}.h5"
    shutil.copy(FIXTURES / f"{name}.h5", dst)
    return dst


def _first_weight(h5: h5py.File, layer_class: str) -> tuple[h5py.Group, str, str]:
    config = json.loads(h5.attrs["model_config"])
    layer = next(entry for entry in config["config"]["layers"] if entry["class_name"] == layer_class)
    name = layer["config"]["name"]
    group = h5["model_weights"][name]
    weight = group.attrs["weight_names"][0]
    return group, name, weight.decode() if isinstance(weight, bytes) else weight


def test_h5_missing_weight_names_the_layer(tmp_path, store):
    path = _h5_copy(tmp_path, "gru_reset_after")
    with h5py.File(path, "r+") as h5:
        group, name, weight = _first_weight(h5, "GRU")
        del group[weight]
    _expect_error(path, store, f"'{name}'", "missing")


def test_h5_weight_shape_not_matching_config_names_the_layer(tmp_path, store):
    path = _h5_copy(tmp_path, "lstm_relu")
    with h5py.File(path, "r+") as h5:
        group, name, weight = _first_weight(h5, "LSTM")
        data = group[weight][()]
        del group[weight]
        group.create_dataset(weight, data=data[:, :-1])
    _expect_error(path, store, f"'{name}'", "shape")


def test_malformed_layer_config_names_the_layer(tmp_path, store, good_keras):
    bad = _rewrite_keras(
        good_keras, tmp_path / "malformed.keras", edit_config=lambda c: _layer_cfg(c, "lstm")["config"].pop("units")
    )
    _expect_error(bad, store, "'lstm'", "malformed")
