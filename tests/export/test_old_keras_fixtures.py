"""The old-Keras fixtures (tests/fixtures/old_keras, written by real Keras 0.2, 0.3, 1.2, 2.3 on
Theano and tf_keras SavedModel by scripts/old_keras/) stay complete and readable: every model has
its files in the formats of its era, they parse with json/yaml/h5py, their weights match the
architecture's layers, and each .npz holds the inputs and outputs of the Keras that wrote it.
No exporter is involved; this pins down the fixtures the old-Keras export tests rely on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "old_keras"
VERSIONS = {
    "keras0.2": "0.2.0",
    "keras0.3": "0.3.3",
    "keras1": "1.2.2",
    "keras2_theano": "2.3.1",
    "tf_savedmodel": "2.21.0",
}
STATEFUL_CALLS = 3
MAX_TOTAL_BYTES = 5 * 1024 * 1024


class _OldKerasYamlLoader(yaml.SafeLoader):
    """Safe YAML plus the python/tuple tag old Keras' `to_yaml` writes for shapes."""


_OldKerasYamlLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node)
)


def _fixtures(generation: str) -> list[Path]:
    return sorted((ROOT / generation).glob("*.npz"))


def _all_fixtures() -> list[Path]:
    return [path for generation in VERSIONS for path in _fixtures(generation)]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _layers_of(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The layer configs of a Keras 0.x (`layers`), Keras 1 Sequential (list) or functional model."""
    if "layers" in config:  # Keras 0.x Sequential
        return list(config["layers"])
    inner = config["config"]
    return list(inner if isinstance(inner, list) else inner["layers"])


def _class_name(layer: dict[str, Any]) -> str:
    return str(layer["class_name"] if "class_name" in layer else layer["name"])


def test_every_generation_has_fixtures() -> None:
    counts = {generation: len(_fixtures(generation)) for generation in VERSIONS}
    assert all(count >= 4 for count in counts.values()), counts


def test_fixtures_stay_small() -> None:
    total = sum(path.stat().st_size for path in ROOT.rglob("*") if path.is_file())
    assert total < MAX_TOTAL_BYTES, total


@pytest.mark.parametrize("npz", _all_fixtures(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_npz_records_inputs_outputs_and_the_keras_that_wrote_them(npz: Path) -> None:
    data = np.load(npz)
    assert str(data["keras_version"]) == VERSIONS[npz.parent.name]
    assert str(data["backend"]).startswith("tensorflow" if npz.parent.name == "tf_savedmodel" else "theano")
    assert str(data["description"])
    pairs = [("x", "y")] if "x" in data else [(f"x_{i}", f"y_{i}") for i in range(STATEFUL_CALLS)]
    for x_key, y_key in pairs:
        x, y = data[x_key], data[y_key]
        assert x.shape[0] == y.shape[0] == 2
        # Keras 0.x's predict loop collects float32 results into float64 arrays
        assert y.dtype in (np.float32, np.float64) and np.isfinite(y).all()


@pytest.mark.parametrize(
    "npz", _fixtures("keras0.2") + _fixtures("keras0.3"), ids=lambda p: f"{p.parent.name}/{p.stem}"
)
def test_keras0_architecture_and_weights_agree(npz: Path) -> None:
    base = npz.with_suffix("")
    config = json.loads(base.with_suffix(".json").read_text())
    yaml_config = yaml.load(base.with_suffix(".yaml").read_text(), Loader=_OldKerasYamlLoader)  # noqa: S506
    assert yaml_config == config
    assert config["name"] == "Sequential"
    layers = _layers_of(config)
    with h5py.File(base.with_suffix(".weights.h5"), "r") as weights:
        assert int(weights.attrs["nb_layers"]) == len(layers)
        for k in range(len(layers)):
            group = weights[f"layer_{k}"]
            assert len(group) == int(group.attrs["nb_params"])
            for n in range(int(group.attrs["nb_params"])):
                assert group[f"param_{n}"].dtype == np.float32


@pytest.mark.parametrize("npz", _fixtures("keras1"), ids=lambda p: p.stem)
def test_keras1_whole_file_and_parts_agree(npz: Path) -> None:
    base = npz.with_suffix("")
    config = json.loads(base.with_suffix(".json").read_text())
    assert yaml.load(base.with_suffix(".yaml").read_text(), Loader=_OldKerasYamlLoader) == config  # noqa: S506
    with h5py.File(base.with_suffix(".h5"), "r") as whole, h5py.File(base.with_suffix(".weights.h5"), "r") as parts:
        # h5py 2 era layout: fixed-length byte strings, not variable-length str
        assert whole.attrs.get_id("model_config").dtype.kind == "S"
        assert _text(whole.attrs["keras_version"]) == "1.2.2"
        # to_json adds the version inside the config; model.save() keeps it in an attribute
        assert config.pop("keras_version") == "1.2.2"
        assert json.loads(_text(whole.attrs["model_config"])) == config
        names = [_text(n) for n in whole["model_weights"].attrs["layer_names"]]
        assert names == [_text(n) for n in parts.attrs["layer_names"]]
        assert len(names) == len(_layers_of(config))
        for name in names:
            weight_names = [_text(w) for w in whole["model_weights"][name].attrs["weight_names"]]
            for weight in weight_names:
                np.testing.assert_array_equal(whole["model_weights"][name][weight][()], parts[name][weight][()])


@pytest.mark.parametrize("npz", _fixtures("keras2_theano"), ids=lambda p: p.stem)
def test_keras2_theano_file_records_its_backend(npz: Path) -> None:
    with h5py.File(npz.with_suffix(".h5"), "r") as f:
        assert _text(f.attrs["backend"]) == "theano"
        assert _text(f.attrs["keras_version"]) == "2.3.1"
        config = json.loads(_text(f.attrs["model_config"]))
        names = [_text(n) for n in f["model_weights"].attrs["layer_names"]]
        assert len(names) == len(config["config"]["layers"])


@pytest.mark.parametrize("npz", _fixtures("tf_savedmodel"), ids=lambda p: p.stem)
def test_savedmodel_directory_is_complete(npz: Path) -> None:
    directory = npz.with_suffix("")
    for part in ("saved_model.pb", "keras_metadata.pb", "variables/variables.index"):
        assert (directory / part).is_file(), part
    assert list((directory / "variables").glob("variables.data-*"))


@pytest.mark.parametrize("generation", ["keras0.2", "keras0.3", "keras1"])
def test_unsupported_files_name_what_no_reader_can_build(generation: str) -> None:
    directory = ROOT / generation
    layer_config = json.loads((directory / "unsupported_layer.json").read_text())
    assert {_class_name(layer) for layer in _layers_of(layer_config)} & {"CuDNNLSTM", "JZS1"}
    activation_config = json.loads((directory / "unsupported_custom_activation.json").read_text())
    activations = {layer.get("config", layer).get("activation") for layer in _layers_of(activation_config)}
    assert "scaled_tanh" in activations
