"""Whole models: functional graphs with several inputs and outputs, seq2seq with initial_state,
the generic RNN with cells and StackedRNNCells, Bidirectional, and the feed-forward layers
recurrent models are built with. Each matches Keras to 1e-5."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers
from kerasparity import TOL, as_list, assert_matches_keras, export, max_diff, random_seq, randomize_weights

B, T, F, U = 3, 6, 4, 5


def test_seq2seq_decoder_takes_initial_state_from_encoder(tmp_path):
    enc_in = keras.Input((T, F), name="encoder_inputs")
    _, h, c = layers.LSTM(U, return_state=True, name="encoder")(enc_in)
    dec_in = keras.Input((T - 1, 3), name="decoder_inputs")
    dec_seq, _, _ = layers.LSTM(U, return_sequences=True, return_state=True, name="decoder")(
        dec_in, initial_state=[h, c]
    )
    out = layers.Dense(3, activation="softmax", name="dense")(dec_seq)
    model = keras.Model([enc_in, dec_in], out)
    randomize_weights(model, seed=20)
    exported = assert_matches_keras(model, tmp_path, [random_seq(B, T, F), random_seq(B, T - 1, 3, seed=1)])
    assert [i.name for i in exported.signature.inputs] == ["encoder_inputs", "decoder_inputs"]
    assert [o.name for o in exported.signature.outputs] == ["dense"]


def test_seq2seq_inference_decoder_with_state_inputs_and_outputs(tmp_path):
    """The lstm_seq2seq example's sampling decoder: states are model inputs and outputs."""
    dec_in = keras.Input((1, 3), name="decoder_inputs")
    h_in, c_in = keras.Input((U,), name="h_in"), keras.Input((U,), name="c_in")
    seq, h, c = layers.LSTM(U, return_sequences=True, return_state=True, name="decoder_lstm")(
        dec_in, initial_state=[h_in, c_in]
    )
    out = layers.Dense(3, activation="softmax", name="decoder_dense")(seq)
    model = keras.Model([dec_in, h_in, c_in], [out, h, c])
    randomize_weights(model, seed=21)
    rng = np.random.default_rng(21)
    xs = [random_seq(B, 1, 3), *(rng.standard_normal((B, U)).astype(np.float32) for _ in range(2))]
    exported = assert_matches_keras(model, tmp_path, xs)
    names = [o.name for o in exported.signature.outputs]
    assert names[0] == "decoder_dense" and len(set(names)) == 3


def test_several_inputs_and_outputs_in_keras_order(tmp_path):
    a, b = keras.Input((T, F), name="b_second"), keras.Input((T, 2), name="a_first")
    x = layers.GRU(U, return_sequences=True, name="g")(a)
    y = layers.SimpleRNN(U, return_sequences=True, name="s")(b)
    merged = layers.Concatenate(name="cat")([x, y])
    added = layers.Add(name="add")([x, y])
    last = layers.LSTM(3, name="l")(merged)
    model = keras.Model([a, b], [last, added, layers.Flatten(name="flat")(added)])
    randomize_weights(model, seed=22)
    exported = assert_matches_keras(model, tmp_path, [random_seq(B, T, F), random_seq(B, T, 2, seed=2)])
    assert [i.name for i in exported.signature.inputs] == ["b_second", "a_first"]
    assert [o.name for o in exported.signature.outputs] == ["l", "add", "flat"]


def test_layer_returning_output_and_states_gets_unique_output_names(tmp_path):
    inp = keras.Input((T, F), name="x")
    out = layers.LSTM(U, return_state=True, name="lstm")(inp)
    exported = assert_matches_keras(keras.Model(inp, out), tmp_path, random_seq(B, T, F))
    assert [o.name for o in exported.signature.outputs] == ["lstm", "lstm_1", "lstm_2"]


def test_repeated_output_names_never_take_another_output_layers_name(tmp_path):
    inp = keras.Input((T, F), name="x")
    out, h, c = layers.LSTM(U, return_state=True, name="lstm")(inp)
    other = layers.Dense(2, name="lstm_1")(out)
    exported = assert_matches_keras(keras.Model(inp, [out, h, other, c]), tmp_path, random_seq(B, T, F))
    assert [o.name for o in exported.signature.outputs] == ["lstm", "lstm_2", "lstm_1", "lstm_3"]


CELLS = {
    "simple": lambda: layers.SimpleRNNCell(U),
    "gru": lambda: layers.GRUCell(U),
    "gru_reset_before": lambda: layers.GRUCell(U, reset_after=False),
    "lstm": lambda: layers.LSTMCell(U),
    "lstm_hard_sigmoid": lambda: layers.LSTMCell(U, recurrent_activation="hard_sigmoid"),
}


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_generic_rnn_with_cell_matches_keras(tmp_path, cell, go_backwards, masked):
    head = [keras.Input((T, F)), layers.Masking(0.0)] if masked else [keras.Input((T, F))]
    model = keras.Sequential([*head, layers.RNN(CELLS[cell](), return_sequences=True, go_backwards=go_backwards)])
    randomize_weights(model, seed=23)
    x = random_seq(B, T, F, seed=3)
    x[0, :2] = 0.0
    x[1, 4:] = 0.0
    x[2, 2] = 0.0
    assert_matches_keras(model, tmp_path, x)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize(
    "cells", [("simple", "lstm"), ("lstm", "gru"), ("gru_reset_before", "simple", "lstm_hard_sigmoid")]
)
def test_stacked_rnn_cells_match_keras(tmp_path, cells, return_sequences, masked):
    head = [keras.Input((T, F)), layers.Masking(0.0)] if masked else [keras.Input((T, F))]
    rnn = layers.RNN(
        layers.StackedRNNCells([CELLS[c]() for c in cells]), return_sequences=return_sequences, name="stack"
    )
    model = keras.Sequential([*head, rnn])
    randomize_weights(model, seed=24)
    x = random_seq(B, T, F, seed=4)
    x[0, :3] = 0.0
    x[2, 5] = 0.0
    exported = assert_matches_keras(model, tmp_path, x)
    kinds = [s.kind for s in exported.signature.states]
    assert kinds[0] == "cell0_h" and len(kinds) == sum(2 if c.startswith("lstm") else 1 for c in cells)


@pytest.mark.parametrize("return_state", [False, True], ids=["no_state", "return_state"])
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_reset_before", "simple_rnn"])
def test_bidirectional_merge_modes_match_keras(exported_cache, kind, merge_mode, return_state):
    def build():
        make = {
            "lstm": lambda: layers.LSTM(U, return_sequences=True, return_state=return_state),
            "gru": lambda: layers.GRU(U, return_sequences=True, return_state=return_state),
            "gru_reset_before": lambda: layers.GRU(
                U, reset_after=False, return_sequences=True, return_state=return_state
            ),
            "simple_rnn": lambda: layers.SimpleRNN(U, return_sequences=True, return_state=return_state),
        }[kind]
        inp = keras.Input((T, F))
        model = keras.Model(inp, layers.Bidirectional(make(), merge_mode=merge_mode)(inp))
        randomize_weights(model, seed=25)
        return model

    model, exported = exported_cache(("bidi_plain", kind, merge_mode, return_state), build)
    x = random_seq(B, T, F, seed=5)
    assert max_diff(exported.run([x])[0], as_list(model.predict(x, verbose=0))) <= TOL


def test_bidirectional_with_explicit_backward_layer_matches_keras(tmp_path):
    inp = keras.Input((T, F))
    bidi = layers.Bidirectional(
        layers.LSTM(U, return_sequences=True),
        backward_layer=layers.GRU(3, return_sequences=True, go_backwards=True),
    )
    model = keras.Model(inp, bidi(inp))
    randomize_weights(model, seed=26)
    assert_matches_keras(model, tmp_path, random_seq(B, T, F, seed=6))


def test_feed_forward_layers_match_keras(tmp_path):
    inp = keras.Input((T, F))
    x = layers.TimeDistributed(layers.Dense(6, activation="relu"))(inp)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("tanh")(x)
    x = layers.SpatialDropout1D(0.3)(x)
    x = layers.LSTM(U)(x)
    x = layers.RepeatVector(3)(x)
    x = layers.GRU(U, return_sequences=True)(x)
    x = layers.Reshape((U, 3))(x)
    x = layers.Flatten()(x)
    out = layers.Dense(2, activation="softmax")(layers.Dropout(0.5)(x))
    model = keras.Model(inp, out)
    randomize_weights(model, seed=27)
    bn = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)][0]
    g, b, m, v = bn.get_weights()
    bn.set_weights([g, b, m, np.abs(v) + 0.5])
    assert_matches_keras(model, tmp_path, random_seq(B, T, F, seed=7))


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "softmax", "gelu", "silu", "elu", "linear"])
def test_dense_activations_match_keras(tmp_path, activation):
    model = keras.Sequential([keras.Input((T, F)), layers.Dense(5, activation=activation)])
    randomize_weights(model, seed=28)
    assert_matches_keras(model, tmp_path, random_seq(B, T, F, seed=8))


def test_lstm_text_generation_example(tmp_path):
    """keras-io lstm_text_generation: LSTM(128) -> Dense(softmax) on one-hot characters (shrunk)."""
    maxlen, chars = 7, 11
    model = keras.Sequential([keras.Input((maxlen, chars)), layers.LSTM(16), layers.Dense(chars, activation="softmax")])
    x = np.eye(chars, dtype=np.float32)[np.random.default_rng(9).integers(0, chars, (B, maxlen))]
    assert_matches_keras(model, tmp_path, x)


def test_imdb_bidirectional_lstm_example(tmp_path):
    """keras-io imdb_bidirectional_lstm: Embedding -> 2x Bidirectional(LSTM) -> Dense(sigmoid)."""
    inp = keras.Input((None,), dtype="int32")
    x = layers.Embedding(20, 8)(inp)
    x = layers.Bidirectional(layers.LSTM(6, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(6))(x)
    model = keras.Model(inp, layers.Dense(1, activation="sigmoid")(x))
    randomize_weights(model, seed=30)
    ids = np.random.default_rng(10).integers(0, 20, (B, 9)).astype(np.int32)
    exported = assert_matches_keras(model, tmp_path, ids)
    assert exported.signature.inputs[0].shape == [-1, -1]
    assert exported.signature.inputs[0].datatype == "INT32"


def test_free_time_dimension_runs_any_length(tmp_path):
    model = keras.Sequential([keras.Input((None, F)), layers.GRU(U, return_sequences=True)])
    randomize_weights(model, seed=31)
    exported = export(model, tmp_path)
    for steps in (1, 4, 9):
        x = random_seq(2, steps, F, seed=steps)
        assert max_diff(exported.run([x])[0], as_list(model.predict(x, verbose=0))) <= TOL


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_stacked_rnn_cells_return_state_matches_keras_flattened(tmp_path, masked):
    """Keras returns (output, [cell0 states], [cell1 states]); the graph lists them flattened."""
    head = [keras.Input((T, F)), layers.Masking(0.0)] if masked else [keras.Input((T, F))]
    rnn = layers.RNN(layers.StackedRNNCells([layers.SimpleRNNCell(3), layers.LSTMCell(U)]), return_state=True)
    model = keras.Sequential([*head, rnn])
    randomize_weights(model, seed=32)
    x = random_seq(B, T, F, seed=12)
    x[0, 4:] = 0.0
    expected = [np.asarray(v) for v in keras.tree.flatten(model.predict(x, verbose=0))]
    got, _ = export(model, tmp_path).run([x])
    assert max_diff(got, expected) <= TOL


def test_time_major_keras2_layer_is_refused(tmp_path):
    import json
    import zipfile

    from seqserve.errors import ExportError
    from seqserve.export import export_model

    model = keras.Sequential([keras.Input((T, F)), layers.LSTM(U, name="tm")])
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        files = {n: z.read(n) for n in z.namelist()}
    cfg = json.loads(files["config.json"])
    cfg["config"]["layers"][1]["config"]["time_major"] = True
    files["config.json"] = json.dumps(cfg).encode()
    with zipfile.ZipFile(tmp_path / "tm.keras", "w") as z:
        for n, d in files.items():
            z.writestr(n, d)
    with pytest.raises(ExportError, match="'tm'.*time_major"):
        export_model(tmp_path / "tm.keras", "m", store=tmp_path / "store", progress=False)


# Keras warns that a Functional layer "destroys" the mask, yet on its torch backend the inner layers
# still see it; the inlined export matches what Keras computes.
@pytest.mark.filterwarnings("ignore:Layer 'head'")
def test_nested_models_are_inlined(tmp_path):
    """A Sequential encoder and a functional head used as layers of an outer model."""
    encoder = keras.Sequential(
        [keras.Input((T, F)), layers.Masking(0.0), layers.LSTM(U, return_sequences=True, name="inner_lstm")],
        name="encoder",
    )
    head_in = keras.Input((T, U), name="head_in")
    head = keras.Model(head_in, layers.GRU(3, name="head_gru")(head_in), name="head")
    inp = keras.Input((T, F), name="x")
    model = keras.Model(inp, head(encoder(inp)))
    randomize_weights(encoder, seed=33)
    randomize_weights(head, seed=34)
    x = random_seq(B, T, F, seed=14)
    x[0, :2] = 0.0
    exported = assert_matches_keras(model, tmp_path, x)
    assert [s.name for s in exported.signature.states] == ["inner_lstm.h", "inner_lstm.c", "head_gru.h"]
    assert [o.name for o in exported.signature.outputs] == ["head"]
    assert exported.signature.source["layer_classes"] == ["GRU", "InputLayer", "LSTM", "Masking"]


def test_functional_model_nested_in_sequential(tmp_path):
    sub_in = keras.Input((T, F))
    sub = keras.Model(sub_in, layers.SimpleRNN(U, return_sequences=True, name="rnn")(sub_in), name="sub")
    model = keras.Sequential([keras.Input((T, F)), sub, layers.Dense(2, name="dense")])
    randomize_weights(sub, seed=35)
    assert_matches_keras(model, tmp_path, random_seq(B, T, F, seed=15))


def test_shared_recurrent_layer_has_states_per_call(tmp_path):
    """A siamese encoder: one LSTM applied to two inputs keeps one set of states per call."""
    a, b = keras.Input((T, F), name="left"), keras.Input((T, F), name="right")
    shared = layers.LSTM(U, name="shared")
    model = keras.Model([a, b], layers.Concatenate(name="both")([shared(a), shared(b)]))
    randomize_weights(model, seed=36)
    exported = assert_matches_keras(model, tmp_path, [random_seq(B, T, F, seed=16), random_seq(B, T, F, seed=17)])
    assert [s.name for s in exported.signature.states] == ["shared.h", "shared.c", "shared@1.h", "shared@1.c"]
    assert {s.layer for s in exported.signature.states} == {"shared", "shared@1"}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_keras3_legacy_h5_file_matches_keras(tmp_path, masked):
    """Keras 3 can still write .h5: Keras 3 configs (ops without a module) in the legacy layout."""
    import onnxruntime as ort

    from seqserve.export import export_model
    from seqserve.store.signature import Signature

    inp = keras.Input((T, F), name="x")
    x = layers.Masking(0.0)(inp) if masked else inp
    x = layers.Bidirectional(layers.LSTM(U, return_sequences=True))(x)
    x = layers.GRU(3, recurrent_activation="hard_sigmoid")(x)
    model = keras.Model(inp, layers.Dense(2, name="out")(x))
    randomize_weights(model, seed=37)
    model.save(tmp_path / "m.h5")
    report = export_model(tmp_path / "m.h5", "m", store=tmp_path / "store", progress=False)
    sig = Signature.read(report.path)
    assert sig.source["format"] == "h5" and sig.source["keras_version"] == keras.__version__
    assert sig.parity["max_abs_diff"] <= TOL
    data = random_seq(B, T, F, seed=18)
    data[0, :2] = 0.0
    session = ort.InferenceSession(str(report.path / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"x": data, **{s.input: np.zeros((B, s.shape[1]), np.float32) for s in sig.states}}
    assert max_diff(session.run(["out"], feeds), as_list(model.predict(data, verbose=0))) <= TOL
