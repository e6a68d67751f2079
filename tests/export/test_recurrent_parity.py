"""LSTM, GRU (reset_after True/False) and SimpleRNN exported to ONNX match Keras to 1e-5, for every
combination of the layer options and every Keras activation."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers
from kerasparity import TOL, as_list, assert_matches_keras, max_diff, random_seq, randomize_weights

from seqserve.cells import CELLS

T, F, U, B = 6, 4, 5, 3

KINDS = {
    "lstm": (layers.LSTM, {}),
    "gru": (layers.GRU, {"reset_after": True}),
    "gru_reset_before": (layers.GRU, {"reset_after": False}),
    "simple_rnn": (layers.SimpleRNN, {}),
}


def _model(kind: str, scale: float = 0.5, **options):
    cls, base = KINDS[kind]
    model = keras.Sequential([keras.Input((T, F)), cls(U, **base, **options)])
    randomize_weights(model, seed=sum(map(ord, kind)), scale=scale)
    return model


@pytest.mark.parametrize("return_state", [False, True], ids=["no_state", "return_state"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "go_backwards"])
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_recurrent_layer_options_match_keras(tmp_path, kind, return_sequences, go_backwards, return_state):
    model = _model(kind, return_sequences=return_sequences, go_backwards=go_backwards, return_state=return_state)
    exported = assert_matches_keras(model, tmp_path, random_seq(B, T, F))
    assert len(exported.signature.outputs) == (1 + (2 if kind == "lstm" else 1) * return_state)


@pytest.mark.parametrize(
    "options",
    [
        {"use_bias": False},
        {"unroll": True, "return_sequences": True},
        {"unroll": True, "go_backwards": True},
        {"dropout": 0.3, "recurrent_dropout": 0.3, "return_sequences": True},
    ],
    ids=["no_bias", "unroll", "unroll_backwards", "dropout_is_noop"],
)
@pytest.mark.parametrize("kind", list(KINDS))
def test_recurrent_layer_extra_options_match_keras(tmp_path, kind, options):
    assert_matches_keras(_model(kind, **options), tmp_path, random_seq(B, T, F, seed=1))


def test_lstm_unit_forget_bias_default_weights_match_keras(tmp_path):
    """Fresh (untrained) weights: the forget-gate bias is ones, the rest zeros."""
    model = keras.Sequential([keras.Input((T, F)), layers.LSTM(U, unit_forget_bias=True, return_sequences=True)])
    assert_matches_keras(model, tmp_path, random_seq(B, T, F, seed=2))


ACTIVATIONS = [
    "tanh",
    "sigmoid",
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "selu",
    "celu",
    "softplus",
    "softsign",
    "hard_sigmoid",
    "hard_silu",
    "silu",
    "gelu",
    "mish",
    "linear",
    "exponential",
    "tanh_shrink",
    "hard_tanh",
    "soft_shrink",
    "hard_shrink",
    "log_sigmoid",
    "sparse_sigmoid",
    "squareplus",
    "sparse_plus",
    "softmax",
    "log_softmax",
]


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(
    "kind,which",
    [
        ("lstm", "activation"),
        ("lstm", "recurrent_activation"),
        ("gru", "activation"),
        ("gru_reset_before", "recurrent_activation"),
        ("simple_rnn", "activation"),
    ],
)
def test_every_keras_activation_matches_keras(tmp_path, kind, which, activation):
    # Small weights keep unbounded activations (relu, exponential...) in a range where float32
    # differences of 1e-5 are meaningful.
    # Gates that are not in [0, 1] (exponential, log_softmax) make the recurrence explode: smaller still.
    scale = 0.05 if activation in ("exponential", "log_softmax") else 0.25
    model = _model(kind, scale=scale, return_sequences=True, **{which: activation})
    x = random_seq(2, T, F, seed=3)
    # Against the float64 reference on random states such gates grow the values: relative bar.
    parity_tol = 1e-4 if activation in ("exponential", "log_softmax") else TOL
    assert_matches_keras(model, tmp_path, x, parity_tol=parity_tol)


def _all_nodes(graph):
    """Every node, subgraphs (If branches, Scan bodies) included."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == attr.GRAPH:
                yield from _all_nodes(attr.g)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_cuda_target_uses_only_forms_the_cuda_ep_runs(tmp_path, kind, masked):
    """--target cuda: no RNN-family op with a non-default activation or GRU linear_before_reset=0,
    anywhere in the graph (If branches and Scan bodies too)."""
    import onnx

    for i, act in enumerate(["tanh", "hard_sigmoid"]):
        extra = {"recurrent_activation": act} if kind != "simple_rnn" else {"activation": act}
        cls, base = KINDS[kind]
        head = [keras.Input((T, F)), layers.Masking(0.0)] if masked else [keras.Input((T, F))]
        model = keras.Sequential([*head, cls(U, return_sequences=True, **base, **extra)])
        randomize_weights(model, seed=14)
        x = random_seq(B, T, F, seed=4)
        if masked:
            x[:, 4:] = 0.0  # a back-padded batch: the fused branch, where there is one
        exported = assert_matches_keras(model, tmp_path / str(i), x, target="cuda")
        graph = onnx.load(str(exported.report.path / "model.onnx")).graph
        for node in _all_nodes(graph):
            assert node.op_type != "RNN"
            attrs = {a.name: a for a in node.attribute}
            if node.op_type in ("LSTM", "GRU"):
                assert "activations" not in attrs and "clip" not in attrs and "activation_alpha" not in attrs
                if node.op_type == "GRU":
                    assert attrs["linear_before_reset"].i == 1
        assert exported.signature.target == "cuda"


def test_keras3_hard_sigmoid_is_x_over_6(tmp_path):
    """Keras 3 files: hard_sigmoid(x) = relu6(x + 3) / 6, not Keras 2's 0.2x + 0.5."""
    model = keras.Sequential([keras.Input((T, F)), layers.Activation("hard_sigmoid")])
    x = np.linspace(-4, 4, B * T * F, dtype=np.float32).reshape(B, T, F)
    exported = assert_matches_keras(model, tmp_path, x)
    got, _ = exported.run([x])
    np.testing.assert_allclose(got[0], np.clip(x / 6 + 0.5, 0, 1), atol=1e-6)


def test_fused_ops_are_used_where_exact(tmp_path):
    """Default LSTM/GRU export to the fused ONNX ops, SimpleRNN to a Scan (DESIGN.md's table)."""
    forms = {}
    for kind in KINDS:
        exported = assert_matches_keras(_model(kind), tmp_path / kind, random_seq(B, T, F))
        forms[kind] = exported.report.forms
    assert forms == {"lstm": {"LSTM": 1}, "gru": {"GRU": 1}, "gru_reset_before": {"GRU": 1}, "simple_rnn": {"Scan": 1}}


def test_state_outputs_equal_keras_return_state(tmp_path):
    """The state graph outputs are the states Keras returns with return_state=True."""
    for kind in KINDS:
        model = _model(kind, return_state=True)
        from kerasparity import export

        exported = export(model, tmp_path / kind)
        x = random_seq(B, T, F, seed=5)
        expected = as_list(model.predict(x, verbose=0))[1:]
        _, states = exported.run([x])
        assert max_diff(list(states.values()), expected) <= TOL


@pytest.mark.parametrize("kind", list(KINDS))
def test_fed_initial_state_matches_keras_initial_state(tmp_path, kind):
    """Feeding state_in.* equals calling the Keras layer with initial_state."""
    cls, base = KINDS[kind]
    n_states = 2 if kind == "lstm" else 1
    inp = keras.Input((T, F))
    states_in = [keras.Input((U,)) for _ in range(n_states)]
    layer = cls(U, return_sequences=True, name="rec", **base)
    model = keras.Model([inp, *states_in], layer(inp, initial_state=states_in))
    randomize_weights(model, seed=6)
    rng = np.random.default_rng(6)
    x = random_seq(B, T, F, seed=6)
    s = [rng.standard_normal((B, U)).astype(np.float32) for _ in range(n_states)]
    expected = as_list(model.predict([x, *s], verbose=0))
    # The same layer without the explicit state inputs, state fed through the graph's state input.
    plain = keras.Sequential([keras.Input((T, F)), cls(U, return_sequences=True, name="rec", **base)])
    plain.layers[-1].set_weights(layer.get_weights())
    from kerasparity import export

    exported = export(plain, tmp_path)
    kinds = ["h", "c"][:n_states]
    got, _ = exported.run([x], {f"rec.{k}": v for k, v in zip(kinds, s, strict=False)})
    assert max_diff(got, expected) <= TOL


def test_matrix_is_not_trivially_equal():
    """Guard: the options above really change Keras' output for every kind (the matrix tests distinct
    things), and the kinds above are every cell kind the exporter knows (a new kind must join them;
    the Keras 0.2-only kinds, SimpleDeepRNN and JZS1-3, are matched against Keras 0.2 itself in
    tests/export/test_keras02_files.py)."""
    x = random_seq(B, T, F)
    for kind in KINDS:
        outs = [as_list(_model(kind, go_backwards=g).predict(x, verbose=0))[0] for g in (False, True)]
        assert np.max(np.abs(outs[0] - outs[1])) > 1e-3, kind
    keras02_only = {kind for kind in CELLS.values() if kind.only_keras_major == 0}
    assert {CELLS[cls.__name__] for cls, _ in KINDS.values()} == set(CELLS.values()) - keras02_only
    assert {CELLS[name] for name in ("SimpleDeepRNN", "JZS1", "JZS2", "JZS3")} == keras02_only


@pytest.mark.parametrize("implementation", [1, 2])
@pytest.mark.parametrize("cell_class", [layers.LSTMCell, layers.GRUCell])
def test_cell_implementation_mode_does_not_change_the_export(tmp_path, cell_class, implementation):
    model = keras.Sequential(
        [keras.Input((T, F)), layers.RNN(cell_class(U, implementation=implementation), return_sequences=True)]
    )
    randomize_weights(model, seed=13)
    assert_matches_keras(model, tmp_path, random_seq(B, T, F, seed=13))
