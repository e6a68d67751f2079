"""Stateful models: the state graph outputs fed back in reproduce Keras' stateful=True across
consecutive predict calls, including after reset_states() and with go_backwards chunks."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers
from kerasparity import TOL, as_list, export, max_diff, random_seq, randomize_weights

B, T, F, U = 2, 5, 3, 4

LAYERS = {
    "lstm": lambda **kw: layers.LSTM(U, **kw),
    "gru": lambda **kw: layers.GRU(U, **kw),
    "gru_reset_before": lambda **kw: layers.GRU(U, reset_after=False, **kw),
    "simple_rnn": lambda **kw: layers.SimpleRNN(U, **kw),
    "lstm_hard_sigmoid": lambda **kw: layers.LSTM(U, recurrent_activation="hard_sigmoid", **kw),
}


def _reset(model) -> None:
    """Keras 3's Model has no reset_states(); each stateful layer has one."""
    for layer in model.layers:
        if getattr(layer, "stateful", False):
            layer.reset_states()


def _run_calls(model, exported, chunks: list[np.ndarray], reset_before: set[int] = frozenset()) -> float:
    """Consecutive calls; the ONNX states are carried like the server carries them."""
    worst = 0.0
    states = None
    _reset(model)
    for i, x in enumerate(chunks):
        if i in reset_before:
            _reset(model)
            states = None
        expected = as_list(model.predict(x, batch_size=B, verbose=0))
        got, states = exported.run([x], states)
        worst = max(worst, max_diff(got, expected))
    return worst


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_stateful_layer_carries_state_across_calls_like_keras(tmp_path, kind, return_sequences, go_backwards):
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(B, T, F)),
            LAYERS[kind](stateful=True, return_sequences=return_sequences, go_backwards=go_backwards),
        ]
    )
    randomize_weights(model, seed=11)
    exported = export(model, tmp_path)
    assert exported.signature.stateful
    chunks = [random_seq(B, T, F, seed=s) for s in range(4)]
    assert _run_calls(model, exported, chunks, reset_before={2}) <= TOL


def test_stacked_stateful_model_with_mask_carries_state(tmp_path):
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(B, T, F)),
            layers.Masking(0.0),
            layers.LSTM(U, stateful=True, return_sequences=True, name="lstm"),
            layers.GRU(3, stateful=True, name="gru"),
            layers.Dense(2),
        ]
    )
    randomize_weights(model, seed=12)
    exported = export(model, tmp_path)
    assert [s.name for s in exported.signature.states] == ["lstm.h", "lstm.c", "gru.h"]
    chunks = [random_seq(B, T, F, seed=s) for s in range(3)]
    chunks[1][0, :2] = 0.0  # front padding inside a later chunk
    chunks[2][1, 3:] = 0.0
    assert _run_calls(model, exported, chunks) <= TOL


def test_stateful_flag_follows_keras_unless_forced(tmp_path):
    plain = keras.Sequential([keras.Input((T, F)), layers.LSTM(U)])
    assert not export(plain, tmp_path / "a").signature.stateful
    assert export(plain, tmp_path / "b", stateful=True).signature.stateful
    stateful = keras.Sequential([keras.Input(batch_shape=(B, T, F)), layers.LSTM(U, stateful=True)])
    assert not export(stateful, tmp_path / "c", stateful=False).signature.stateful


def test_state_specs_describe_every_state_tensor(tmp_path):
    inp = keras.Input((T, F), name="frames")
    seq = layers.Bidirectional(layers.LSTM(U, return_sequences=True), name="bi")(inp)
    out = layers.GRU(3, name="top")(seq)
    exported = export(keras.Model(inp, out), tmp_path)
    sig = exported.signature
    assert [(s.name, s.input, s.output, s.shape, s.layer, s.kind, s.datatype) for s in sig.states] == [
        ("bi.forward_h", "state_in.bi.forward_h", "state_out.bi.forward_h", [-1, U], "bi", "forward_h", "FP32"),
        ("bi.forward_c", "state_in.bi.forward_c", "state_out.bi.forward_c", [-1, U], "bi", "forward_c", "FP32"),
        ("bi.backward_h", "state_in.bi.backward_h", "state_out.bi.backward_h", [-1, U], "bi", "backward_h", "FP32"),
        ("bi.backward_c", "state_in.bi.backward_c", "state_out.bi.backward_c", [-1, U], "bi", "backward_c", "FP32"),
        ("top.h", "state_in.top.h", "state_out.top.h", [-1, 3], "top", "h", "FP32"),
    ]
    graph_inputs = [i.name for i in exported.session.get_inputs()]
    graph_outputs = [o.name for o in exported.session.get_outputs()]
    assert graph_inputs == ["frames"] + [s.input for s in sig.states]
    assert graph_outputs == ["top"] + [s.output for s in sig.states]
    for i in exported.session.get_inputs():
        assert isinstance(i.shape[0], str)  # symbolic batch


@pytest.mark.parametrize("kind", ["lstm", "gru", "simple_rnn"])
def test_stateful_bidirectional_carries_both_directions(tmp_path, kind):
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(B, T, F)),
            layers.Bidirectional(LAYERS[kind](stateful=True, return_sequences=True)),
        ]
    )
    randomize_weights(model, seed=13)
    exported = export(model, tmp_path)
    assert exported.signature.stateful
    chunks = [random_seq(B, T, F, seed=s) for s in range(3)]
    assert _run_calls(model, exported, chunks, reset_before={2}) <= TOL
