"""Masks (Masking, Embedding(mask_zero=True)) match Keras exactly: front padding, back padding,
holes and fully masked rows, through single, stacked and bidirectional recurrent layers."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers
from kerasparity import TOL, as_list, max_diff, randomize_weights

T, F, U, V = 6, 3, 4, 9

PATTERNS = {
    "front_padding": [0, 0, 1, 1, 1, 1],
    "back_padding": [1, 1, 1, 1, 0, 0],
    "holes": [1, 0, 1, 1, 0, 1],
    "last_step_masked_only": [1, 1, 1, 1, 1, 0],
    "fully_masked_row": [0, 0, 0, 0, 0, 0],
    "no_padding": [1, 1, 1, 1, 1, 1],
}
RECURRENT = {
    "lstm": lambda **kw: layers.LSTM(U, **kw),
    "gru": lambda **kw: layers.GRU(U, **kw),
    "gru_reset_before": lambda **kw: layers.GRU(U, reset_after=False, **kw),
    "simple_rnn": lambda **kw: layers.SimpleRNN(U, **kw),
}


def _float_batch(pattern: list[int], seed: int = 0) -> np.ndarray:
    """Three rows: the pattern, a full row, and the pattern shifted, with zeros at masked steps."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3, T, F)).astype(np.float32)
    m = np.array([pattern, [1] * T, np.roll(pattern, 1)], dtype=bool)
    x[~m] = 0.0
    return x


def _id_batch(pattern: list[int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, V, (3, T)).astype(np.int32)
    m = np.array([pattern, [1] * T, np.roll(pattern, 1)], dtype=bool)
    ids[~m] = 0
    return ids


def _check(model, exported, x) -> None:
    expected = as_list(model.predict(x, verbose=0))
    got, _ = exported.run([x])
    diff = max_diff(got, expected)
    assert diff <= TOL, f"max abs diff {diff:.3g}"


def _masked_model(kind: str, source: str, **options):
    if source == "masking":
        head = [keras.Input((T, F)), layers.Masking(0.0)]
    else:
        head = [keras.Input((T,), dtype="int32"), layers.Embedding(V, F, mask_zero=True)]
    model = keras.Sequential([*head, RECURRENT[kind](**options)])
    randomize_weights(model, seed=7)
    return model


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("kind", list(RECURRENT))
def test_masking_layer_matches_keras(exported_cache, kind, return_sequences, go_backwards, pattern):
    opts = dict(return_sequences=return_sequences, go_backwards=go_backwards, return_state=True)
    model, exported = exported_cache(
        ("masking", kind, return_sequences, go_backwards), lambda: _masked_model(kind, "masking", **opts)
    )
    _check(model, exported, _float_batch(PATTERNS[pattern]))


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("kind", list(RECURRENT))
def test_embedding_mask_zero_matches_keras(exported_cache, kind, return_sequences, pattern):
    opts = dict(return_sequences=return_sequences)
    model, exported = exported_cache(
        ("embedding", kind, return_sequences), lambda: _masked_model(kind, "embedding", **opts)
    )
    _check(model, exported, _id_batch(PATTERNS[pattern]))


def _stacked(first: str, second: str, second_backwards: bool):
    model = keras.Sequential(
        [
            keras.Input((T,), dtype="int32"),
            layers.Embedding(V, F, mask_zero=True),
            RECURRENT[first](return_sequences=True),
            layers.Dropout(0.5),
            RECURRENT[second](return_sequences=True, go_backwards=second_backwards),
            layers.TimeDistributed(layers.Dense(2)),
        ]
    )
    randomize_weights(model, seed=8)
    return model


@pytest.mark.parametrize("pattern", list(PATTERNS))
@pytest.mark.parametrize(
    "first,second,backwards",
    [("lstm", "gru", False), ("gru", "lstm", True), ("simple_rnn", "lstm", False), ("lstm", "simple_rnn", True)],
)
def test_mask_flows_through_stacked_layers(exported_cache, first, second, backwards, pattern):
    model, exported = exported_cache(("stacked", first, second, backwards), lambda: _stacked(first, second, backwards))
    _check(model, exported, _id_batch(PATTERNS[pattern], seed=1))


def _bidirectional(kind: str, merge_mode, return_state: bool, return_sequences: bool):
    inp = keras.Input((T, F))
    masked = layers.Masking(0.0)(inp)
    out = layers.Bidirectional(
        RECURRENT[kind](return_sequences=return_sequences, return_state=return_state), merge_mode=merge_mode
    )(masked)
    model = keras.Model(inp, out)
    randomize_weights(model, seed=9)
    return model


@pytest.mark.parametrize("pattern", ["front_padding", "back_padding", "holes", "no_padding"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_bidirectional_with_mask_matches_keras(exported_cache, kind, merge_mode, return_sequences, pattern):
    return_state = merge_mode in ("concat", None)
    model, exported = exported_cache(
        ("bidi", kind, merge_mode, return_sequences),
        lambda: _bidirectional(kind, merge_mode, return_state, return_sequences),
    )
    _check(model, exported, _float_batch(PATTERNS[pattern], seed=2))


def test_masked_lstm_switches_between_fused_padding_and_scan(exported_cache):
    """Batches of back- or front-padded rows may run the fused op (sequence_lens); others the Scan form."""
    _, exported = exported_cache(
        ("masking", "lstm", False, False),
        lambda: _masked_model("lstm", "masking", return_sequences=False, go_backwards=False, return_state=True),
    )
    assert exported.report.forms == {"If": 1, "LSTM": 1, "Scan": 1}
    _, simple = exported_cache(
        ("masking", "simple_rnn", False, False),
        lambda: _masked_model("simple_rnn", "masking", return_sequences=False, go_backwards=False, return_state=True),
    )
    assert simple.report.forms == {"Scan": 1}


def _back_padded_batch(kind: str, seed: int) -> np.ndarray:
    """Every row back-padded (lengths 6, 4, 1, 3): the batch takes the fused path where there is one."""
    return _padded_batch(kind, seed, front=False)


def _front_padded_batch(kind: str, seed: int) -> np.ndarray:
    """Every row front-padded (Keras' `pad_sequences` default; lengths 6, 4, 1, 3)."""
    return _padded_batch(kind, seed, front=True)


def _mixed_padded_batch(kind: str, seed: int) -> np.ndarray:
    """Rows padded at either end (full, back, front, back, front): still the fused path."""
    return _padded_batch(kind, seed, front=[False, False, True, False, True], lengths=[T, 4, 1, 3, 5])


def _padded_batch(kind: str, seed: int, front: bool | list[bool], lengths: list[int] | None = None) -> np.ndarray:
    lengths = lengths or [T, 4, 1, 3]
    fronts = front if isinstance(front, list) else [front] * len(lengths)
    if kind == "ids":
        x = np.random.default_rng(seed).integers(1, V, (len(lengths), T)).astype(np.int32)
    else:
        x = np.random.default_rng(seed).standard_normal((len(lengths), T, F)).astype(np.float32)
    for row, (n, at_front) in enumerate(zip(lengths, fronts, strict=True)):
        if at_front:
            x[row, : T - n] = 0
        else:
            x[row, n:] = 0
    return x


@pytest.mark.parametrize("return_state", [False, True], ids=["no_state", "return_state"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("kind", list(RECURRENT))
def test_padded_batch_matches_keras(tmp_path, kind, return_sequences, go_backwards, return_state):
    model = _masked_model(
        kind, "masking", return_sequences=return_sequences, go_backwards=go_backwards, return_state=return_state
    )
    from kerasparity import export

    exported = export(model, tmp_path)
    for seed in range(2):
        _check(model, exported, _back_padded_batch("float", seed))
        _check(model, exported, _front_padded_batch("float", seed))
        _check(model, exported, _mixed_padded_batch("float", seed))


@pytest.mark.parametrize("merge_mode", ["concat", None])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_reset_before"])
def test_padded_batch_through_bidirectional_matches_keras(exported_cache, kind, merge_mode, return_sequences):
    model, exported = exported_cache(
        ("bidi", kind, merge_mode, return_sequences),
        lambda: _bidirectional(kind, merge_mode, merge_mode in ("concat", None), return_sequences),
    )
    _check(model, exported, _back_padded_batch("float", 3))
    _check(model, exported, _front_padded_batch("float", 3))
    _check(model, exported, _mixed_padded_batch("float", 3))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_padded_embedding_batch_matches_keras(exported_cache, kind):
    model, exported = exported_cache(
        ("embedding", kind, True), lambda: _masked_model(kind, "embedding", return_sequences=True)
    )
    _check(model, exported, _back_padded_batch("ids", 4))
    _check(model, exported, _front_padded_batch("ids", 4))
    _check(model, exported, _mixed_padded_batch("ids", 4))


def _ran_recurrent_ops(path: Path, feeds: dict[str, np.ndarray], output: str, tmp_path: Path, tag: str):
    """Run the model once with ORT's profiler: (output, the recurrent ops that ran)."""
    import json

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(tmp_path / f"profile_{tag}")
    session = ort.InferenceSession(str(path), opts)
    got = session.run([output], feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    ran = {e["args"].get("op_name") for e in events if e.get("cat") == "Node"} & {"LSTM", "GRU", "Scan"}
    return got, ran


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
def test_padded_batches_run_the_fused_op_and_other_masks_the_scan(tmp_path, go_backwards):
    from kerasparity import export

    model = _masked_model("lstm", "masking", return_sequences=True, go_backwards=go_backwards)
    exported = export(model, tmp_path)
    mixed = _back_padded_batch("float", 5)
    mixed[1] = _front_padded_batch("float", 5)[1]  # one row front-padded, the others back-padded
    empty = _front_padded_batch("float", 5)
    empty[2] = 0.0  # a fully masked row
    holes = _back_padded_batch("float", 5)
    holes[0, 2] = 0.0
    cases = {
        "back": (_back_padded_batch("float", 5), "LSTM"),
        "front": (_front_padded_batch("float", 5), "LSTM"),
        "holes": (holes, "Scan"),
        "mixed": (mixed, "LSTM"),
        "empty_row": (empty, "Scan"),
        "front_with_holes": (_float_batch(PATTERNS["front_padding"]), "Scan"),  # its third row has a hole
    }
    for tag, (x, expected_op) in cases.items():
        feeds = {exported.signature.inputs[0].name: x}
        feeds.update({s.input: np.zeros((x.shape[0], U), np.float32) for s in exported.signature.states})
        got, ran = _ran_recurrent_ops(
            exported.report.path / "model.onnx", feeds, exported.signature.outputs[0].name, tmp_path, tag
        )
        assert ran == {expected_op}, (tag, ran)
        assert max_diff(got, as_list(model.predict(x, verbose=0))) <= TOL, tag


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_front_padded_batch_runs_both_directions_of_bidirectional_fused(exported_cache, tmp_path, kind):
    model, exported = exported_cache(("bidi", kind, "concat", True), lambda: _bidirectional(kind, "concat", True, True))
    x = _front_padded_batch("float", 14)
    feeds = {exported.signature.inputs[0].name: x}
    feeds.update({s.input: np.zeros((x.shape[0], U), np.float32) for s in exported.signature.states})
    got, ran = _ran_recurrent_ops(
        exported.report.path / "model.onnx", feeds, exported.signature.outputs[0].name, tmp_path, kind
    )
    assert ran == {kind.upper()}, ran
    assert max_diff(got, as_list(model.predict(x, verbose=0))[:1]) <= TOL


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_reset_before"])
def test_padded_batch_with_initial_state_matches_keras(tmp_path, kind, return_sequences, go_backwards):
    """Given states, a masked step keeps the state (the initial one before the first valid step);
    the output there is still the previous output or zeros, never the initial state."""
    n_states = 2 if kind == "lstm" else 1
    inp = keras.Input((T, F))
    states_in = [keras.Input((U,)) for _ in range(n_states)]
    opts = dict(return_sequences=return_sequences, go_backwards=go_backwards, return_state=True, name="rec")
    layer = RECURRENT[kind](**opts)
    masking = layers.Masking(0.0)
    # Keras drops the automatic mask of a call given `initial_state`: pass it explicitly.
    out = layer(masking(inp), initial_state=states_in, mask=masking.compute_mask(inp))
    model = keras.Model([inp, *states_in], out)
    randomize_weights(model, seed=11)
    plain = keras.Sequential([keras.Input((T, F)), layers.Masking(0.0), RECURRENT[kind](**opts)])
    plain.layers[-1].set_weights(layer.get_weights())
    from kerasparity import export

    exported = export(plain, tmp_path)
    rng = np.random.default_rng(11)
    kinds = ["h", "c"][:n_states]
    for front in (False, True, [True, False, True, False]):
        x = _padded_batch("float", 12, front=front)
        s = [rng.standard_normal((len(x), U)).astype(np.float32) for _ in range(n_states)]
        expected = as_list(model.predict([x, *s], verbose=0))
        got, _ = exported.run([x], {f"rec.{k}": v for k, v in zip(kinds, s, strict=False)})
        assert max_diff(got, expected) <= TOL, front


@pytest.mark.parametrize("second_backwards", [False, True], ids=["forward", "go_backwards"])
@pytest.mark.parametrize("first,second", [("lstm", "gru"), ("gru", "lstm")])
def test_padded_batch_through_stacked_layers_matches_keras(exported_cache, first, second, second_backwards):
    model, exported = exported_cache(
        ("stacked", first, second, second_backwards), lambda: _stacked(first, second, second_backwards)
    )
    _check(model, exported, _front_padded_batch("ids", 13))
    _check(model, exported, _back_padded_batch("ids", 13))
    _check(model, exported, _mixed_padded_batch("ids", 13))


@pytest.mark.parametrize("merge", ["add", "concatenate"])
def test_functional_embedding_mask_zero_with_two_branches_matches_keras(tmp_path, merge):
    """Keras 3 functional configs carry the mask as explicit op layers (NotEqual, ExpandDims,
    ZerosLike, LogicalOr, the Concatenate op, Any); the parity oracle covers them too."""
    from kerasparity import export

    ids = keras.Input((T,), dtype="int32", name="ids")
    emb = layers.Embedding(V, F, mask_zero=True, name="emb")(ids)
    fwd = layers.LSTM(U, return_sequences=True, name="fwd")(emb)
    back = layers.GRU(U, return_sequences=True, go_backwards=True, name="back")(emb)
    merged = layers.Add(name="add")([fwd, back]) if merge == "add" else layers.Concatenate(name="cat")([fwd, back])
    out = layers.SimpleRNN(3, name="top")(merged)
    model = keras.Model(ids, [out, layers.Dense(2, name="per_step")(merged)])
    randomize_weights(model, seed=10)
    exported = export(model, tmp_path)
    assert exported.signature.parity["max_abs_diff"] is not None
    for pattern in PATTERNS.values():
        _check(model, exported, _id_batch(pattern, seed=6))
