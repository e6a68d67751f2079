"""Keras 1.2.2 files (tests/fixtures/old_keras/keras1, with Keras 1's own `predict` outputs) exported
without Keras: the whole-model `.h5` of `model.save()` and the `to_json()` / `to_yaml()`
architecture with its `save_weights` file match Keras 1 within 1e-5 — every consume_less weight
layout, go_backwards, Masking, Embedding(mask_zero), stacks, a functional model and stateful
models over three consecutive calls. Unsupported options fail on one line naming file and layer."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from kerasparity import TOL

from helpers.old_keras import FIXTURES as OLD_KERAS
from helpers.old_keras import export_fixture, refusal, worst_difference
from seqserve.cli import main
from seqserve.errors import ExportError
from seqserve.keras import load_keras_model
from seqserve.keras.keras1 import is_keras1

FIXTURES = OLD_KERAS / "keras1"
UNSUPPORTED = "unsupported_custom_activation"
SUPPORTED = sorted(p.stem for p in FIXTURES.glob("*.npz") if p.stem != UNSUPPORTED)
FORMATS = {"h5": (".h5", None), "json": (".json", ".weights.h5"), "yaml": (".yaml", ".weights.h5")}


def _source(name: str, form: str) -> tuple[Path, Path | None]:
    suffix, weights = FORMATS[form]
    return FIXTURES / f"{name}{suffix}", None if weights is None else FIXTURES / f"{name}{weights}"


def _export(name: str, form: str, store: Path):
    src, weights = _source(name, form)
    return export_fixture(src, name, store, weights)


@pytest.mark.parametrize("form", list(FORMATS))
@pytest.mark.parametrize("name", SUPPORTED)
def test_keras1_fixture_matches_keras1_predict(tmp_path, name, form):
    sig, sess = _export(name, form, tmp_path / "store")
    assert sig.source["keras_version"] == "1.2.2"
    assert worst_difference(sig, sess, dict(np.load(FIXTURES / f"{name}.npz"))) <= TOL


def test_cli_exports_an_architecture_with_its_weights(tmp_path, capsys):
    src, weights = _source("lstm_gpu", "yaml")
    store = tmp_path / "store"
    assert main(["export", str(src), "--weights", str(weights), "--name", "m", "--store", str(store), "--quiet"]) == 0
    assert (store / "m" / "1" / "model.onnx").is_file()
    assert "Keras 1.2.2" in capsys.readouterr().out


def _refused(tmp_path: Path, src: Path, weights: Path | None) -> str:
    return refusal(tmp_path / "store", src, weights)


@pytest.mark.parametrize("form", list(FORMATS))
def test_custom_activation_is_refused_naming_file_and_layer(tmp_path, form):
    src, weights = _source(UNSUPPORTED, form)
    message = _refused(tmp_path, src, weights)
    assert str(src) in message and "gru_10" in message and "scaled_tanh" in message


def test_layer_that_never_existed_is_refused_naming_file_and_layer(tmp_path):
    src = FIXTURES / "unsupported_layer.json"
    message = _refused(tmp_path, src, FIXTURES / "lstm_cpu.weights.h5")
    assert str(src) in message and "lstm_1" in message and "JZS1" in message


def test_architecture_without_weights_is_refused(tmp_path):
    message = _refused(tmp_path, FIXTURES / "lstm_cpu.json", None)
    assert "--weights" in message


def test_weights_beside_a_whole_model_file_are_refused(tmp_path):
    message = _refused(tmp_path, FIXTURES / "lstm_cpu.h5", FIXTURES / "lstm_cpu.weights.h5")
    assert "--weights" in message


def _lstm_config(**cfg) -> dict:
    return {"class_name": "Sequential", "config": [{"class_name": "LSTM", "config": {"name": "l", **cfg}}]}


def test_generation_is_told_from_version_or_config_keys():
    assert is_keras1(_lstm_config(output_dim=5, inner_activation="tanh"), None, "f")
    assert is_keras1(_lstm_config(output_dim=5, inner_activation="tanh"), "1.2.2", "f")
    later = {"class_name": "Sequential", "config": {"layers": [{"class_name": "LSTM", "config": {"units": 5}}]}}
    assert not is_keras1(later, None, "f")
    assert not is_keras1(later, "2.3.1", "f")


@pytest.mark.parametrize(
    ("config", "version"),
    [
        (_lstm_config(output_dim=5, inner_activation="tanh", units=5, recurrent_activation="tanh"), None),
        (_lstm_config(units=5, recurrent_activation="tanh"), "1.2.2"),
        (_lstm_config(output_dim=5, inner_activation="tanh"), "2.3.1"),
        ({"class_name": "Sequential", "config": [{"class_name": "Masking", "config": {"name": "m"}}]}, None),
    ],
    ids=["mixed-keys", "says-1-looks-2", "says-2-looks-1", "nothing-to-tell"],
)
def test_file_of_undecidable_generation_is_refused(config, version):
    with pytest.raises(ExportError, match="cannot tell which Keras wrote it"):
        is_keras1(config, version, "model.json")


def test_yaml_is_read_without_constructing_python_objects(tmp_path):
    src = tmp_path / "evil.yaml"
    src.write_text("!!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ExportError, match="evil.yaml"):
        load_keras_model(src, weights=FIXTURES / "lstm_cpu.weights.h5")


def test_keras1_weights_become_keras2_order():
    """'cpu' LSTM gates are stored i, c, f, o; Keras 2's kernel columns are i|f|c|o — as 'gpu' stores them."""
    cpu = load_keras_model(FIXTURES / "lstm_cpu.h5").layer("lstm_1").weights
    with h5py.File(FIXTURES / "lstm_cpu.h5") as f:
        group = f["model_weights/lstm_1"]
        w_f, w_c = group["lstm_1_W_f"][()], group["lstm_1_W_c"][()]
    np.testing.assert_array_equal(cpu[0][:, 5:10], w_f)
    np.testing.assert_array_equal(cpu[0][:, 10:15], w_c)
