"""What export_model writes: versions in the store, the signature's fields, the report."""

from __future__ import annotations

import json

import keras
import onnx
import onnxruntime as ort
from keras import layers

from seqserve.export import export_model
from seqserve.export.builder import OPSET
from seqserve.store.signature import Signature


def _model():
    return keras.Sequential(
        [keras.Input((5, 3), name="frames"), layers.GRU(4, name="gru"), layers.Dense(2, name="out")]
    )


def test_versions_count_up_and_explicit_versions_are_kept(tmp_path):
    src = tmp_path / "m.keras"
    _model().save(src)
    store = tmp_path / "store"
    assert export_model(src, "chars", store=store, progress=False).version == 1
    assert export_model(src, "chars", store=store, version=5, progress=False).version == 5
    report = export_model(src, "chars", store=store, progress=False)
    assert report.version == 6 and report.path == store / "chars" / "6"
    assert sorted(p.name for p in (store / "chars").iterdir()) == ["1", "5", "6"]
    assert sorted(p.name for p in report.path.iterdir()) == ["model.onnx", "signature.json"]


def test_signature_records_source_and_parity(tmp_path):
    src = tmp_path / "m.keras"
    _model().save(src)
    report = export_model(src, "m", store=tmp_path / "store", progress=False)
    sig = Signature.read(report.path)
    assert sig.source["file"] == "m.keras"
    assert sig.source["format"] == "keras3"
    assert sig.source["keras_version"] == keras.__version__
    assert sig.source["layer_classes"] == ["Dense", "GRU", "InputLayer"]
    assert 0 <= sig.parity["max_abs_diff"] <= 1e-5
    assert sig.parity["against"].startswith("seqserve.reference")
    assert sig.inputs[0].name == "frames" and sig.inputs[0].shape == [-1, 5, 3] and sig.inputs[0].datatype == "FP32"
    assert sig.outputs[0].name == "out" and sig.outputs[0].shape == [-1, 2]
    assert json.loads((report.path / "signature.json").read_text())["states"][0]["name"] == "gru.h"


def test_onnx_file_uses_supported_opset_and_ir(tmp_path):
    src = tmp_path / "m.keras"
    _model().save(src)
    report = export_model(src, "m", store=tmp_path / "store", progress=False)
    model = onnx.load(str(report.path / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == OPSET >= 17
    ort.InferenceSession(str(report.path / "model.onnx"), providers=["CPUExecutionProvider"])


def test_summary_names_layers_parameters_states_and_path(tmp_path):
    src = tmp_path / "m.keras"
    model = _model()
    model.save(src)
    report = export_model(src, "m", store=tmp_path / "store", progress=False)
    text = report.summary()
    assert "GRU" in text and "Dense" in text
    assert f"{model.count_params():,}" in text
    assert "gru.h" in text
    assert str(report.path) in text
    assert "parity" in text
    assert report.n_params == model.count_params()
