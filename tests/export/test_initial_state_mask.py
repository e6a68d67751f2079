"""Keras 3 runs a recurrent layer called with states unmasked, and still passes its input's mask on.

Keras 3's `Layer.__call__` (keras/src/layers/layer.py, "6. Populate mask argument(s)") fills the
`mask` argument in from the inputs' masks only when the call has exactly one tensor argument.
`lstm(masked_x, initial_state=[h, c])` (or `lstm(masked_x, [h, c])`) has two, so the recurrence
ignores the Masking/Embedding(mask_zero) mask: padded steps update the state like any other step.
The output still carries the input's mask (`previous_mask` falls back to the first argument's mask
and RNN.compute_mask passes it on with return_sequences), so a layer downstream is masked. A mask
passed explicitly (`mask=`) is used. Bidirectional given states behaves the same way.

The export and the NumPy reference (the signature's parity figure) must both follow that; Keras 2
files (tf.keras) do mask such calls, see test_keras2_h5.py's `masked_lstm_initial_state` fixture.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers
from kerasparity import TOL, as_list, export, max_diff, randomize_weights

from seqserve.keras import load_keras_model
from seqserve.reference import run_reference

T, F, U, V = 6, 3, 4, 9
LENGTHS = [T, 4, 1, 3]
PADDINGS = {
    "front": [True] * 4,
    "back": [False] * 4,
    "mixed": [False, True, False, True],
}
RECURRENT = {
    "lstm": (layers.LSTM, 2),
    "gru": (layers.GRU, 1),
    "gru_reset_before": (lambda units, **kw: layers.GRU(units, reset_after=False, **kw), 1),
    "simple_rnn": (layers.SimpleRNN, 1),
}


def _padded(source: str, fronts: list[bool], seed: int, holes: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if source == "embedding":
        x = rng.integers(1, V, (len(LENGTHS), T)).astype(np.int32)
    else:
        x = rng.standard_normal((len(LENGTHS), T, F)).astype(np.float32)
    for row, (n, front) in enumerate(zip(LENGTHS, fronts, strict=True)):
        if front:
            x[row, : T - n] = 0
        else:
            x[row, n:] = 0
    if holes:
        x[0, 2] = 0
    return x


def _head(source: str, name: str = "x"):
    if source == "embedding":
        inp = keras.Input((T,), dtype="int32", name=name)
        return inp, layers.Embedding(V, F, mask_zero=True, name=f"{name}_emb")(inp)
    inp = keras.Input((T, F), name=name)
    return inp, layers.Masking(0.0, name=f"{name}_masking")(inp)


def _states(batch: int, n: int, seed: int, units: int = U) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, units)).astype(np.float32) for _ in range(n)]


def _compare(model, tmp_path: Path, xs: list[np.ndarray], exported=None) -> float:
    """Export (its parity figure held to TOL by `export`) and compare both the ONNX graph and the
    NumPy reference with `model.predict`. Returns the worst difference."""
    if exported is None:
        exported = export(model, tmp_path)
    expected = as_list(model.predict(xs, verbose=0))
    got, _ = exported.run(xs)
    diff = max_diff(got, expected)
    assert diff <= TOL, f"export: max abs diff {diff:.3g}"
    ref, _ = run_reference(load_keras_model(tmp_path / "m.keras"), xs)
    ref_diff = max_diff([np.asarray(r, np.float32) for r in ref], expected)
    assert ref_diff <= TOL, f"reference: max abs diff {ref_diff:.3g}"
    return max(diff, ref_diff)


def _called_with_states(kind: str, source: str, return_sequences: bool, how: str):
    """head -> rec(initial_state from model inputs) -> a layer that sees rec's output mask."""
    cls, n = RECURRENT[kind]
    inp, masked = _head(source)
    states = [keras.Input((U,), name=f"s{k}") for k in range(n)]
    rec = cls(U, return_sequences=return_sequences, return_state=True, name="rec")
    if how == "kwarg":
        outs = rec(masked, initial_state=states)
    elif how == "positional":
        outs = rec(masked, states)
    else:  # "explicit_mask": Keras uses a mask passed as `mask=`
        mask = layers.Masking(0.0).compute_mask(inp) if source == "masking" else keras.ops.not_equal(inp, 0)
        outs = rec(masked, initial_state=states, mask=mask)
    y = outs[0]
    after = (
        layers.GRU(3, return_sequences=True, name="after")(y)  # masked by the mask rec passes on
        if return_sequences
        else layers.Dense(2, name="after")(y)
    )
    model = keras.Model([inp, *states], [*outs, after])
    randomize_weights(model, seed=21)
    return model, n


@pytest.mark.parametrize("how", ["kwarg", "positional", "explicit_mask"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("source", ["masking", "embedding"])
@pytest.mark.parametrize("kind", list(RECURRENT))
def test_states_from_inputs_run_unmasked_like_keras3(tmp_path, kind, source, return_sequences, how):
    model, n = _called_with_states(kind, source, return_sequences, how)
    exported = export(model, tmp_path)
    for seed, (padding, fronts) in enumerate(PADDINGS.items()):
        x = _padded(source, fronts, seed, holes=padding == "mixed")
        _compare(model, tmp_path, [x, *_states(len(x), n, seed)], exported)


def test_states_make_keras3_skip_the_mask_but_an_explicit_mask_does_not(tmp_path):
    """The premise of this file, on Keras itself: given states, a masked and an unmasked input
    give the same outputs (padded steps are computed) unless the mask is passed explicitly."""
    x = _padded("masking", PADDINGS["front"], 0)
    s = _states(len(x), 2, 0)
    auto, _ = _called_with_states("lstm", "masking", True, "kwarg")
    explicit, _ = _called_with_states("lstm", "masking", True, "explicit_mask")
    inp = keras.Input((T, F))
    states = [keras.Input((U,)) for _ in range(2)]
    plain = keras.Model([inp, *states], auto.get_layer("rec")(inp, initial_state=states)[0])
    y_auto = as_list(auto.predict([x, *s], verbose=0))[0]
    assert max_diff([y_auto], [plain.predict([x, *s], verbose=0)]) == 0.0
    explicit.set_weights(auto.get_weights())
    assert max_diff([y_auto], as_list(explicit.predict([x, *s], verbose=0))[:1]) > 0.1


def _seq2seq(kind: str, decoder_return_state: bool):
    """lstm_seq2seq: the encoder's final states start the decoder; both inputs are masked."""
    cls, _ = RECURRENT[kind]
    enc_in, enc = _head("embedding", "enc_ids")
    enc_outs = cls(U, return_state=True, name="encoder")(enc)
    dec_in, dec = _head("embedding", "dec_ids")
    dec_outs = cls(U, return_sequences=True, return_state=decoder_return_state, name="decoder")(
        dec, initial_state=enc_outs[1:]
    )
    dec_seq = dec_outs[0] if decoder_return_state else dec_outs
    probs = layers.TimeDistributed(layers.Dense(V, activation="softmax"), name="probs")(dec_seq)
    # A recurrent layer after the decoder sees the decoder's output mask (the decoder input's).
    summary = layers.SimpleRNN(3, name="summary")(dec_seq)
    extra = list(dec_outs[1:]) if decoder_return_state else []
    model = keras.Model([enc_in, dec_in], [probs, summary, *extra])
    randomize_weights(model, seed=22)
    return model


@pytest.mark.parametrize("decoder_return_state", [False, True], ids=["sequences", "with_states"])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_seq2seq_decoder_with_masked_input_matches_keras3(tmp_path, kind, decoder_return_state):
    model = _seq2seq(kind, decoder_return_state)
    exported = export(model, tmp_path)
    for seed, (enc_pad, dec_pad) in enumerate([("front", "back"), ("back", "front"), ("front", "front")]):
        enc = _padded("embedding", PADDINGS[enc_pad], seed)
        dec = _padded("embedding", PADDINGS[dec_pad], seed + 10)
        _compare(model, tmp_path, [enc, dec], exported)


def _bidirectional(kind: str, merge_mode):
    cls, n = RECURRENT[kind]
    inp, masked = _head("masking")
    states = [keras.Input((U,), name=f"s{k}") for k in range(2 * n)]
    bi = layers.Bidirectional(cls(U, return_sequences=True), merge_mode=merge_mode, name="bi")
    outs = bi(masked, initial_state=states)
    if merge_mode is None:
        outs = [*outs, layers.LSTM(3, name="after")(outs[0])]
    else:
        outs = [outs, layers.LSTM(3, name="after")(outs)]
    model = keras.Model([inp, *states], outs)
    randomize_weights(model, seed=23)
    return model, 2 * n


@pytest.mark.parametrize("merge_mode", ["concat", "sum", None])
@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_bidirectional_with_states_matches_keras3(tmp_path, kind, merge_mode):
    model, n = _bidirectional(kind, merge_mode)
    exported = export(model, tmp_path)
    for seed, fronts in enumerate(PADDINGS.values()):
        x = _padded("masking", fronts, seed)
        _compare(model, tmp_path, [x, *_states(len(x), n, seed)], exported)


def test_keras3_legacy_h5_with_states_runs_unmasked(tmp_path):
    """A Keras 3 model saved as legacy `.h5` follows Keras 3's rule, not Keras 2's."""
    import onnxruntime as ort

    from seqserve.export import export_model
    from seqserve.store.signature import Signature

    model, n = _called_with_states("lstm", "masking", True, "kwarg")
    model.save(tmp_path / "m.h5")
    report = export_model(tmp_path / "m.h5", "m", store=tmp_path / "store", progress=False)
    sig = Signature.read(report.path)
    assert sig.source["format"] == "h5" and sig.source["keras_version"].startswith("3.")
    assert sig.parity["max_abs_diff"] <= TOL
    sess = ort.InferenceSession(str(report.path / "model.onnx"), providers=["CPUExecutionProvider"])
    x = _padded("masking", PADDINGS["mixed"], 5, holes=True)
    xs = [x, *_states(len(x), n, 5)]
    feeds = {i.name: v for i, v in zip(sig.inputs, xs, strict=True)}
    feeds.update({s.input: np.zeros([len(x), *s.shape[1:]], np.float32) for s in sig.states})
    got = sess.run([o.name for o in sig.outputs], feeds)
    assert max_diff(got, as_list(model.predict(xs, verbose=0))) <= TOL
