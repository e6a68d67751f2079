"""Keras 0.2.0 architectures (`to_json()` / `to_yaml()`) with their unnamed `save_weights` files
(tests/fixtures/old_keras/keras0.2, with Keras 0.2's own `predict` outputs) exported without Keras:
SimpleRNN, GRU and LSTM with 0.2's defaults (sigmoid activations), SimpleDeepRNN at depths 1-3 with
its lookback carried as states, JZS1-3, non-default activations, a stack of them, and Keras 0.2's
own masking rule after Embedding(mask_zero) and Masking, within 1e-5. Unsupported layers and
activations are refused with one line naming the file and the layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from kerasparity import TOL

from helpers.old_keras import FIXTURES as OLD_KERAS
from helpers.old_keras import export_fixture, refusal, worst_difference

FIXTURES = OLD_KERAS / "keras0.2"
UNSUPPORTED = "unsupported_custom_activation"
SUPPORTED = sorted(p.stem for p in FIXTURES.glob("*.npz") if p.stem != UNSUPPORTED)
# Fixtures to stream in chunks with the states carried between calls.
SEQUENCES = [
    "simple_deep_rnn_depth1",
    "simple_deep_rnn_depth2",
    "simple_deep_rnn_depth3",
    "embedding_mask_simple_deep_rnn3",
    "embedding_mask_lstm_pre",
    "embedding_mask_gru_post",
    "masking_simple_rnn",
    "stack",
]


def test_every_family_is_covered():
    families = {"simple_rnn", "gru", "lstm", "simple_deep_rnn", "jzs1", "jzs2", "jzs3", "stack", "embedding_mask_"}
    assert all(any(name.startswith(f) for name in SUPPORTED) for f in families | {"masking_"})
    assert len(SUPPORTED) == 22


@pytest.mark.parametrize("form", ["json", "yaml"])
@pytest.mark.parametrize("name", SUPPORTED)
def test_keras02_fixture_matches_keras02_predict(tmp_path, name, form):
    sig, sess = export_fixture(FIXTURES / f"{name}.{form}", name, tmp_path / "store", FIXTURES / f"{name}.weights.h5")
    assert sig.source["keras_version"] == "0.2"
    assert worst_difference(sig, sess, dict(np.load(FIXTURES / f"{name}.npz"))) <= TOL
    # The NumPy reference (the export's own parity check) agrees with the graph.
    assert sig.parity["max_abs_diff"] is not None and sig.parity["max_abs_diff"] <= TOL


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_simple_deep_rnn_states_are_its_lookback(tmp_path, depth):
    name = f"simple_deep_rnn_depth{depth}"
    sig, _ = export_fixture(FIXTURES / f"{name}.json", name, tmp_path / "store", FIXTURES / f"{name}.weights.h5")
    assert [s.kind for s in sig.states] == ["h", *[f"h_lag{i}" for i in range(1, depth)], "valid"]
    assert [s.shape[1:] for s in sig.states] == [[5]] * depth + [[depth]]


@pytest.mark.parametrize("name", SEQUENCES)
def test_streamed_in_chunks_with_states_carried_matches_one_call(tmp_path, name):
    """The sequence as chunks of 2, 1 and the rest, each call starting from the states the last left:
    SimpleDeepRNN's lookback reaches into the previous call (and is left out before the first step),
    and a masked step at a chunk's end resets the state the next chunk starts from."""
    sig, sess = export_fixture(FIXTURES / f"{name}.json", name, tmp_path / "store", FIXTURES / f"{name}.weights.h5")
    data = dict(np.load(FIXTURES / f"{name}.npz"))
    x, y = data["x"], data["y"]
    states = {s.input: np.zeros([x.shape[0], *s.shape[1:]], np.float32) for s in sig.states}
    got = []
    for start, stop in [(0, 2), (2, 3), (3, x.shape[1])]:
        out = sess.run(
            [sig.outputs[0].name] + [s.output for s in sig.states], {sig.inputs[0].name: x[:, start:stop], **states}
        )
        got.append(out[0])
        states = {s.input: v for s, v in zip(sig.states, out[1:], strict=True)}
    # A model ending in the last step's output (stack) is compared on the last call.
    streamed = np.concatenate(got, axis=1) if y.ndim == 3 else got[-1]
    assert np.max(np.abs(streamed - y)) <= TOL


def _refused(tmp_path: Path, src: Path, weights: Path | None) -> str:
    return refusal(tmp_path / "store", src, weights)


@pytest.mark.parametrize("form", ["json", "yaml"])
def test_custom_activation_is_refused_naming_file_and_layer(tmp_path, form):
    src = FIXTURES / f"{UNSUPPORTED}.{form}"
    message = _refused(tmp_path, src, FIXTURES / f"{UNSUPPORTED}.weights.h5")
    assert "'simplernn'" in message and "scaled_tanh" in message


def test_layer_that_never_existed_is_refused_naming_file_and_layer(tmp_path):
    message = _refused(tmp_path, FIXTURES / "unsupported_layer.json", FIXTURES / "lstm.weights.h5")
    assert "'cudnnlstm'" in message and "CuDNNLSTM" in message


def test_keras02_layer_in_a_later_keras_file_is_refused():
    from seqserve.cells import UnknownCell, layer_cells

    cfg = {"units": 3, "depth": 2, "activation": "tanh", "recurrent_activation": "sigmoid"}
    with pytest.raises(UnknownCell, match="Keras 0"):
        layer_cells("SimpleDeepRNN", cfg, 2, 4, [], lambda part, *_: part)
