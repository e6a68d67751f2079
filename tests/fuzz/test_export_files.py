"""Mutated Keras files fed to the exporter: truncated, bit-flipped, huge or nonsensical values in the
config JSON, zip and HDF5 bombs. Each ends in an export or an ExportError naming the file, within
bounded memory, and the store is left without a half-written version."""

from __future__ import annotations

import io
import json
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.fuzzing import FUZZ, examples
from seqserve.errors import ExportError
from seqserve.export import export_model
from seqserve.keras import reader

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
KERAS_FILE = FIXTURES / "gpu" / "gru.keras"
H5_FILE = FIXTURES / "keras2" / "gru_reset_after.h5"
# Inputs a long run found, kept as regression cases (tests/fuzz/README.md).
CORPUS = Path(__file__).resolve().parent / "corpus"

# Far above what reading these small models costs (a few MiB), far below what a bomb would.
MEMORY_BOUND = 256 * 1024 * 1024


@pytest.fixture(autouse=True)
def quick_read_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    # These files read in milliseconds; a damaged one that makes libhdf5 loop is given up on sooner.
    monkeypatch.setattr(reader, "READ_TIMEOUT_SECONDS", 3.0)


def _export_or_refuse(src: Path, store: Path) -> ExportError | None:
    """Exports `src`; an ExportError naming the file is the one acceptable failure."""
    try:
        export_model(src, "m", store=store, progress=False)
    except ExportError as e:
        assert str(src) in e.message or src.name in e.message, e.message
        assert "\n" not in e.message.strip(), e.message
        assert not any(p.name.startswith(".export-") for p in store.rglob("*")), "a half-written version was left"
        return e
    return None


def _refused_within_memory(src: Path, store: Path) -> ExportError:
    tracemalloc.start()
    try:
        error = _export_or_refuse(src, store)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error is not None, f"{src.name} was exported"
    assert peak < MEMORY_BOUND, f"reading {src.name} took {peak / 2**20:.0f} MiB before it was refused"
    return error


def _rezip(original: Path, target: Path, replace: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(target, "w", compression) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, replace.get(info.filename, src.read(info.filename)))
    return target


# -- byte-level mutations -------------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        else:
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(chunk)] = chunk
    return bytes(data)


@pytest.mark.parametrize("original", [KERAS_FILE, H5_FILE], ids=lambda p: p.suffix)
def test_corrupted_files_export_or_are_refused_naming_the_file(original: Path, tmp_path: Path) -> None:
    @given(mutated(original.read_bytes()))
    @settings(FUZZ, max_examples=examples(60))
    def run(data: bytes) -> None:
        src = tmp_path / f"model{original.suffix}"
        src.write_bytes(data)
        _export_or_refuse(src, tmp_path / "store")

    run()


# -- the config JSON -----------------------------------------------------------------------------

HUGE = st.sampled_from([10**12, 2**31, 2**63, -1, 0, 10**300, 1e308, -(2**63), 3.5, True, None, "8", [], {}])


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*prefix, index))
    return found


def _set(document: Any, path: tuple[Any, ...], value: Any) -> None:
    """Sets the value at `path`, if an earlier mutation has not replaced what it led through."""
    try:
        parent = _get(document, path[:-1])
        if isinstance(parent, list | dict):
            parent[path[-1]] = value
    except (LookupError, TypeError):
        pass


@given(st.data())
@settings(FUZZ, max_examples=examples(80))
def test_config_values_out_of_range_export_or_are_refused(tmp_path_factory: pytest.TempPathFactory, data) -> None:
    with zipfile.ZipFile(KERAS_FILE) as zf:
        config = json.loads(zf.read("config.json"))
    numeric = [
        p for p in _paths(config) if isinstance(_get(config, p), int | float) and not isinstance(_get(config, p), bool)
    ]
    for path in data.draw(st.lists(st.sampled_from(numeric + _paths(config)), min_size=1, max_size=3)):
        _set(config, path, data.draw(HUGE))
    tmp = tmp_path_factory.mktemp("config")
    src = _rezip(KERAS_FILE, tmp / "model.keras", {"config.json": json.dumps(config).encode()})
    _export_or_refuse(src, tmp / "store")


def _get(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("config", "layers", 1, "config", "units"), 10**9),
        (("config", "layers", 0, "config", "batch_shape"), [None, 7, 10**9]),
        (("config", "layers", 0, "config", "batch_shape"), [None, 10**12, 4]),
        (("config", "layers", 0, "config", "batch_shape"), [None] + [1] * 70),
        # ONNX Runtime aborts the whole process running a recurrent op over zero steps.
        (("config", "layers", 0, "config", "batch_shape"), [None, 0, 4]),
    ],
    ids=["units", "features", "timesteps", "dimensions", "zero-timesteps"],
)
def test_huge_dimensions_in_the_config_are_refused_within_memory(tmp_path: Path, where: tuple, value: Any) -> None:
    with zipfile.ZipFile(KERAS_FILE) as zf:
        config = json.loads(zf.read("config.json"))
    _set(config, where, value)
    src = _rezip(KERAS_FILE, tmp_path / "model.keras", {"config.json": json.dumps(config).encode()})
    tracemalloc.start()
    try:
        _export_or_refuse(src, tmp_path / "store")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_config_is_refused(tmp_path: Path, depth: int) -> None:
    src = _rezip(KERAS_FILE, tmp_path / "model.keras", {"config.json": b"[" * depth + b"]" * depth})
    assert "nested" in _refused_within_memory(src, tmp_path / "store").message


def test_config_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    src = _rezip(KERAS_FILE, tmp_path / "model.keras", {"config.json": b'{"class_name": "\xff\xfe"}'})
    _refused_within_memory(src, tmp_path / "store")


# -- bombs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "mebibytes"),
    [("config.json", 256), ("model.weights.h5", 32)],
    ids=["config-over-the-size-limit", "weights-inflating-1000x"],
)
def test_zip_bomb_is_refused_before_it_is_inflated(tmp_path: Path, entry: str, mebibytes: int) -> None:
    # Spaces (valid JSON padding) and zeros deflate about 1000:1: a small file that would fill memory.
    src = tmp_path / "bomb.keras"
    filler = b" " if entry == "config.json" else b"\0"
    with zipfile.ZipFile(KERAS_FILE) as original, zipfile.ZipFile(src, "w", zipfile.ZIP_DEFLATED) as bomb:
        for info in original.infolist():
            if info.filename != entry:
                bomb.writestr(info.filename, original.read(info.filename))
        with bomb.open(entry, "w", force_zip64=True) as out:
            out.write(original.read(entry))
            block = filler * 2**20
            for _ in range(mebibytes):
                out.write(block)
    assert src.stat().st_size < mebibytes * 2**20 / 100
    error = _refused_within_memory(src, tmp_path / "store")
    assert entry in error.message


def test_zip_entry_declaring_a_huge_size_is_refused(tmp_path: Path) -> None:
    # A central directory may claim any size: the claim alone must be refused, not trusted.
    src = _rezip(KERAS_FILE, tmp_path / "model.keras", {})
    data = bytearray(src.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo("model.weights.h5")
    # The entry's central directory record (46 bytes, then its name): uncompressed size at offset 24.
    record = data.find(b"model.weights.h5", data.find(b"PK\x01\x02")) - 46
    assert data[record : record + 4] == b"PK\x01\x02"
    assert int.from_bytes(data[record + 24 : record + 28], "little") == info.file_size
    data[record + 24 : record + 28] = (2**32 - 2).to_bytes(4, "little")
    src.write_bytes(bytes(data))
    _refused_within_memory(src, tmp_path / "store")


def test_hdf5_weight_declaring_gigabytes_it_does_not_store_is_refused(tmp_path: Path) -> None:
    # An HDF5 dataset may declare any shape with no data written: reading it allocates it all.
    src = tmp_path / "bomb.h5"
    src.write_bytes(H5_FILE.read_bytes())
    with h5py.File(src, "r+") as h5:
        group = h5["model_weights"]
        layer = next(name for name in group if len(group[name].attrs.get("weight_names", [])))
        weight = group[layer].attrs["weight_names"][0]
        weight = weight.decode() if isinstance(weight, bytes) else str(weight)
        del group[layer][weight]
        group[layer].create_dataset(weight, shape=(2**15, 2**15), dtype=np.float32, chunks=(64, 64))  # 4 GiB
    error = _refused_within_memory(src, tmp_path / "store")
    assert layer in error.message or weight in error.message


def test_hdf5_file_that_makes_libhdf5_loop_is_refused_in_time(tmp_path: Path) -> None:
    # Three bit flips in gru_reset_after.h5: h5py never returns from opening it (found by a long run).
    src = tmp_path / "loops.h5"
    src.write_bytes((CORPUS / "hdf5_loops_forever.h5").read_bytes())
    started = time.monotonic()
    error = _export_or_refuse(src, tmp_path / "store")
    assert error is not None and "did not finish" in error.message
    assert time.monotonic() - started < 30
