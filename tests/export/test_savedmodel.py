"""tf.keras 2.x SavedModel directories (tests/fixtures/old_keras/tf_savedmodel, written by tf_keras
2.21 with its own predict outputs): read without TensorFlow and exported to match within 1e-5; a
damaged directory is refused with an error naming it and what is wrong."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from kerasparity import TOL

from seqserve.cli import main
from seqserve.errors import ExportError
from seqserve.export import export_model
from seqserve.keras import load_keras_model
from seqserve.keras.tensor_bundle import FOOTER_BYTES, crc32c
from seqserve.store.signature import Signature

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "old_keras" / "tf_savedmodel"
STATELESS = ["lstm", "gru_reset_after", "gru_reset_before", "bidirectional_lstm"]


def _export(path: Path, tmp_path: Path):
    report = export_model(path, path.name, store=tmp_path / "store", progress=False)
    sig = Signature.read(report.path)
    sess = ort.InferenceSession(str(report.path / "model.onnx"), providers=["CPUExecutionProvider"])
    return sig, sess


def _zeros(sig: Signature, batch: int) -> dict[str, np.ndarray]:
    return {s.input: np.zeros([batch, *s.shape[1:]], np.float32) for s in sig.states}


@pytest.mark.parametrize("name", STATELESS)
def test_savedmodel_fixture_matches_tf_keras(tmp_path, name):
    data = np.load(FIXTURES / f"{name}.npz")
    sig, sess = _export(FIXTURES / name, tmp_path)
    assert sig.source["format"] == "savedmodel" and sig.source["keras_version"] == "2.21.0"
    x = data["x"]
    got = sess.run([sig.outputs[0].name], {sig.inputs[0].name: x, **_zeros(sig, x.shape[0])})[0]
    diff = float(np.max(np.abs(got - data["y"])))
    assert diff <= TOL, f"max abs diff {diff:.3g}"


def test_savedmodel_stateful_lstm_carries_state_across_calls(tmp_path):
    data = np.load(FIXTURES / "lstm_stateful.npz")
    sig, sess = _export(FIXTURES / "lstm_stateful", tmp_path)
    assert sig.stateful and sig.states
    states = _zeros(sig, 2)
    for i in range(3):
        res = sess.run(None, {sig.inputs[0].name: data[f"x_{i}"], **states})
        by_name = dict(zip([o.name for o in sess.get_outputs()], res, strict=False))
        diff = float(np.max(np.abs(by_name[sig.outputs[0].name] - data[f"y_{i}"])))
        assert diff <= TOL, f"call {i}: max abs diff {diff:.3g}"
        states = {s.input: by_name[s.output] for s in sig.states}


def test_cli_exports_a_savedmodel_directory(tmp_path, capsys):
    rc = main(["export", str(FIXTURES / "lstm"), "--name", "m", "--store", str(tmp_path / "store"), "--quiet"])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "store" / "m" / "1" / "model.onnx").is_file()
    assert "savedmodel" in capsys.readouterr().out


def test_savedmodel_weights_are_read_in_get_weights_order():
    # gru_reset_before keeps its traces: its variables are keyed `variables/N`, not by layer path.
    for name in ("gru_reset_before", "bidirectional_lstm"):
        model = load_keras_model(FIXTURES / name)
        layer = model.layers[-1]
        shapes = [w.shape for w in layer.weights]
        assert shapes == {"gru_reset_before": [(3, 15), (5, 15), (15,)]}.get(name, [(3, 16), (4, 16), (16,)] * 2)


# ------------------------------------------------------------------------------- damaged directories


def _copy(tmp_path: Path, name: str = "lstm") -> Path:
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def _refused(path: Path, *words: str) -> str:
    with pytest.raises(ExportError) as e:
        load_keras_model(path)
    message = str(e.value)
    assert str(path) in message and all(w in message for w in words), message
    assert "\n" not in message
    return message


def _rewrite_data_block(index: Path, old: bytes, new: bytes) -> None:
    """Replace bytes inside the index's first data block and fix the block's checksum, as a writer
    that meant it would have (the fixtures' tables have one data block, at offset 0)."""
    table = bytearray(index.read_bytes())
    footer = table[-FOOTER_BYTES:]
    # The footer starts with the metaindex block's offset, which follows the data block and its
    # 5-byte trailer (a varint: two bytes in these fixtures).
    metaindex_offset = (footer[0] & 0x7F) | (footer[1] << 7)
    assert footer[0] & 0x80 and not footer[1] & 0x80
    size = metaindex_offset - 5
    assert old in table[:size] and len(old) == len(new)
    table[:size] = table[:size].replace(old, new, 1)
    crc = crc32c(bytes(table[:size]) + bytes([table[size]]))
    masked = (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    struct.pack_into("<I", table, size + 1, masked)
    index.write_bytes(bytes(table))


def test_truncated_index_is_refused(tmp_path):
    path = _copy(tmp_path)
    index = path / "variables" / "variables.index"
    index.write_bytes(index.read_bytes()[:-20])
    _refused(path, "variables.index", "magic")


def test_index_with_a_flipped_magic_is_refused(tmp_path):
    path = _copy(tmp_path)
    index = path / "variables" / "variables.index"
    raw = bytearray(index.read_bytes())
    raw[-1] ^= 0xFF
    index.write_bytes(bytes(raw))
    _refused(path, "magic")


def test_index_with_a_damaged_block_is_refused(tmp_path):
    path = _copy(tmp_path)
    index = path / "variables" / "variables.index"
    raw = bytearray(index.read_bytes())
    raw[40] ^= 0x01
    index.write_bytes(bytes(raw))
    _refused(path, "checksum")


def test_savedmodel_without_keras_metadata_is_refused(tmp_path):
    path = _copy(tmp_path)
    (path / "keras_metadata.pb").unlink()
    _refused(path, "keras_metadata.pb", "not written by Keras")


def test_garbage_keras_metadata_is_refused(tmp_path):
    path = _copy(tmp_path)
    (path / "keras_metadata.pb").write_bytes(b"\x0a\xff\xff\xff\x0f" + b"x" * 10)
    _refused(path, "keras_metadata.pb")


def test_directory_that_is_not_a_savedmodel_is_refused(tmp_path):
    _refused(tmp_path, "not a SavedModel")


def test_tensor_past_the_end_of_the_data_file_is_refused(tmp_path):
    path = _copy(tmp_path)
    # The bias entry: offset 640 (varint 80 05) -> 1280, past the 1291-byte data file with its 80 bytes.
    _rewrite_data_block(path / "variables" / "variables.index", b"\x20\x80\x05\x28\x50", b"\x20\x80\x0a\x28\x50")
    _refused(path, "outside", "variables.data-00000-of-00001")


def test_tensor_that_is_not_float32_is_refused(tmp_path):
    path = _copy(tmp_path)
    # The bias entry's dtype: DT_FLOAT (08 01) -> DT_DOUBLE (08 02), just before its shape (12 04 12 02 08 14).
    _rewrite_data_block(
        path / "variables" / "variables.index", b"\x08\x01\x12\x04\x12\x02\x08\x14", b"\x08\x02\x12\x04\x12\x02\x08\x14"
    )
    _refused(path, "float64", "not float32")


def test_corrupt_tensor_bytes_are_refused(tmp_path):
    path = _copy(tmp_path)
    data = path / "variables" / "variables.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[10] ^= 0x40
    data.write_bytes(bytes(raw))
    _refused(path, "checksum")


def test_missing_data_file_is_refused(tmp_path):
    path = _copy(tmp_path)
    (path / "variables" / "variables.data-00000-of-00001").unlink()
    _refused(path, "no data file")


def test_failed_savedmodel_export_writes_nothing(tmp_path):
    path = _copy(tmp_path)
    (path / "keras_metadata.pb").unlink()
    with pytest.raises(ExportError):
        export_model(path, "m", store=tmp_path / "store", progress=False)
    assert not (tmp_path / "store" / "m").exists()


def test_weights_file_with_a_savedmodel_directory_is_refused(tmp_path):
    with pytest.raises(ExportError, match="carries its weights"):
        load_keras_model(FIXTURES / "lstm", weights=tmp_path / "w.h5")
