"""Write the Keras 0.2.0 and 0.3.3 fixtures of tests/fixtures/old_keras/keras0.2 and keras0.3.

Run inside the env of that version (made by setup_envs.sh); the script asks Keras which it is:
    bench/.envs/keras0.2/bin/python scripts/old_keras/write_fixtures_keras0.py [NAME ...]
    bench/.envs/keras0.3/bin/python scripts/old_keras/write_fixtures_keras0.py [NAME ...]
(names: only those fixtures; Theano compiles each model in pure Python, ~10 s a model).

Keras 0.x saves a model only as an architecture (`to_json` / `to_yaml`) plus `save_weights`
HDF5, so each fixture NAME is NAME.json, NAME.yaml, NAME.weights.h5 and NAME.npz (the inputs `x`,
Keras' own `predict` output `y`; a stateful model's consecutive calls as x_0, y_0, x_1, ...).
Weights are drawn from uniform(-0.5, 0.5), embeddings and inputs from normal(0, 2), seeded from
the fixture's name. Every supported fixture is reloaded from its JSON and weights and predicted
again, so a file Keras cannot read back is never written.
"""

import json
import sys
from importlib.metadata import version

import numpy as np
import yaml

sys.path.insert(0, __import__("os").path.dirname(__file__))
import fixture_common as fx  # noqa: E402

KERAS = version("keras")
GENERATION = {"0.2.0": "keras0.2", "0.3.3": "keras0.3"}[KERAS]
OUT = fx.out_dir(GENERATION)
ONLY = set(sys.argv[1:])  # fixture names to (re)write; none: all

from keras.layers.core import Dense, Masking  # noqa: E402
from keras.layers.embeddings import Embedding  # noqa: E402
from keras.layers.recurrent import GRU, LSTM, SimpleRNN  # noqa: E402
from keras.models import Sequential, model_from_json  # noqa: E402

if GENERATION == "keras0.2":
    from keras.layers.recurrent import JZS1, JZS2, JZS3, SimpleDeepRNN  # noqa: E402


def scaled_tanh(x):
    """A custom activation: Keras 0.x writes its __name__, which no reader can resolve."""
    import theano.tensor as T

    return 1.7 * T.tanh(x)


def sequential(*layers):
    model = Sequential()
    for layer in layers:
        model.add(layer)
    return model


def randomize(model, rng):
    for layer in model.layers:
        shapes = [w.shape for w in layer.get_weights()]
        if not shapes:
            continue
        if isinstance(layer, Embedding):
            layer.set_weights([(rng.standard_normal(shapes[0]) * fx.INPUT_SCALE).astype("float32")])
        else:
            layer.set_weights(fx.random_weights(rng, shapes))


def compiled(model):
    # Keras 0.x builds its predict function in compile(); the optimizer is recorded in the JSON.
    model.compile(loss="mse", optimizer="sgd")
    return model


def save(name, model, description, inputs, stateful=False):
    """Predict (one call, or one per chunk if stateful), save all formats, reload and recheck."""
    arrays = {}
    outputs = []
    for i, x in enumerate(inputs):
        y = model.predict(x, batch_size=fx.BATCH)
        outputs.append(y)
        if stateful:
            arrays[f"x_{i}"], arrays[f"y_{i}"] = x, y
        else:
            arrays["x"], arrays["y"] = x, y
    fx.write_text(OUT / (name + ".json"), model.to_json())
    fx.write_text(OUT / (name + ".yaml"), model.to_yaml())
    model.save_weights(str(OUT / (name + ".weights.h5")), overwrite=True)
    fx.write_npz(OUT / (name + ".npz"), KERAS, "theano", description, arrays)

    # The YAML holds the JSON's config (tuples tagged !!python/tuple); one reload is enough.
    yaml_config = yaml.load((OUT / (name + ".yaml")).read_text(), Loader=yaml.UnsafeLoader)
    assert json.loads(json.dumps(yaml_config)) == json.loads(model.to_json()), name
    if not name.startswith("unsupported"):
        again = model_from_json((OUT / (name + ".json")).read_text())  # compiles: has optimizer
        again.load_weights(str(OUT / (name + ".weights.h5")))
        for x, y in zip(inputs, outputs, strict=True):
            np.testing.assert_allclose(again.predict(x, batch_size=fx.BATCH), y, atol=1e-6)
    print(GENERATION, name, "ok", [o.shape for o in outputs])


def fixture(name, description, layers, x=None, stateful=False):
    if ONLY and name not in ONLY:
        return
    rng = fx.rng_for(GENERATION + "/" + name)
    np.random.seed(fx.zlib_seed(name))  # Keras' own initializers draw from np.random
    model = sequential(*layers())
    randomize(model, rng)
    compiled(model)
    if x is None:
        x = [fx.sequence(rng)]
    elif callable(x):
        x = x(rng)
    save(name, model, description, x, stateful)


def keras02_fixtures():
    F, U = fx.FEATURES, fx.UNITS
    deep_steps = 6

    def deep_x(rng):
        return [fx.sequence(rng, steps=deep_steps)]

    fixture(
        "simple_rnn",
        "SimpleRNN(5), Keras 0.2 defaults (activation sigmoid), sequences",
        lambda: [SimpleRNN(U, input_dim=F, return_sequences=True)],
    )
    fixture(
        "simple_rnn_tanh_last",
        "SimpleRNN(5, activation='tanh'), last output",
        lambda: [SimpleRNN(U, input_dim=F, activation="tanh")],
    )
    for depth in (1, 2, 3):
        fixture(
            f"simple_deep_rnn_depth{depth}",
            f"SimpleDeepRNN(5, depth={depth}), defaults (sigmoid, inner hard_sigmoid), sequences",
            lambda depth=depth: [SimpleDeepRNN(U, depth=depth, input_dim=F, return_sequences=True)],
            deep_x,
        )
    fixture(
        "simple_deep_rnn_depth2_tanh_sigmoid_last",
        "SimpleDeepRNN(5, depth=2, activation='tanh', inner_activation='sigmoid'), last",
        lambda: [SimpleDeepRNN(U, depth=2, input_dim=F, activation="tanh", inner_activation="sigmoid")],
        deep_x,
    )
    fixture(
        "gru",
        "GRU(5), Keras 0.2 defaults (activation sigmoid, inner hard_sigmoid), sequences",
        lambda: [GRU(U, input_dim=F, return_sequences=True)],
    )
    fixture(
        "gru_tanh_sigmoid_last",
        "GRU(5, activation='tanh', inner_activation='sigmoid'), last",
        lambda: [GRU(U, input_dim=F, activation="tanh", inner_activation="sigmoid")],
    )
    fixture(
        "lstm",
        "LSTM(5), defaults (tanh, inner hard_sigmoid), sequences",
        lambda: [LSTM(U, input_dim=F, return_sequences=True)],
    )
    fixture(
        "lstm_relu_sigmoid_last",
        "LSTM(5, activation='relu', inner_activation='sigmoid'), last",
        lambda: [LSTM(U, input_dim=F, activation="relu", inner_activation="sigmoid")],
    )
    for cls in (JZS1, JZS2, JZS3):
        fixture(
            cls.__name__.lower(),
            f"{cls.__name__}(5), defaults (tanh, inner sigmoid), sequences",
            lambda cls=cls: [cls(U, input_dim=F, return_sequences=True)],
        )
    fixture(
        "jzs1_square",
        "JZS1(3) on 3 features (input_dim == output_dim: Pmat starts as I)",
        lambda: [JZS1(F, input_dim=F, return_sequences=True)],
    )
    fixture(
        "jzs2_hard_sigmoid_last",
        "JZS2(5, inner_activation='hard_sigmoid'), last",
        lambda: [JZS2(U, input_dim=F, inner_activation="hard_sigmoid")],
    )
    fixture(
        "jzs3_sigmoid_hard_sigmoid_last",
        "JZS3(5, activation='sigmoid', inner_activation='hard_sigmoid'), last",
        lambda: [JZS3(U, input_dim=F, activation="sigmoid", inner_activation="hard_sigmoid")],
    )
    fixture(
        "stack",
        "LSTM(5, seq) -> JZS3(4, seq) -> SimpleDeepRNN(3, depth=2) -> Dense(2)",
        lambda: [
            LSTM(U, input_dim=F, return_sequences=True),
            JZS3(4, return_sequences=True),
            SimpleDeepRNN(3, depth=2),
            Dense(2),
        ],
        deep_x,
    )
    fixture(
        "embedding_mask_lstm_pre",
        "Embedding(6, 3, mask_zero=True) -> LSTM(5, seq); front padding, row 1 has a zero inside",
        lambda: [Embedding(fx.VOCAB, fx.EMBED_DIM, mask_zero=True), LSTM(U, return_sequences=True)],
        lambda rng: fx.padded_ids(rng, "pre"),
    )
    fixture(
        "embedding_mask_gru_post",
        "Embedding(6, 3, mask_zero=True) -> GRU(5, seq); back padding, row 1 has a zero inside",
        lambda: [Embedding(fx.VOCAB, fx.EMBED_DIM, mask_zero=True), GRU(U, return_sequences=True)],
        lambda rng: fx.padded_ids(rng, "post"),
    )
    fixture(
        "embedding_mask_simple_deep_rnn3",
        "Embedding(mask_zero) -> SimpleDeepRNN(5, depth=3, seq); front padding, row 1 has a zero inside",
        lambda: [Embedding(fx.VOCAB, fx.EMBED_DIM, mask_zero=True), SimpleDeepRNN(U, depth=3, return_sequences=True)],
        lambda rng: fx.padded_ids(rng, "pre"),
    )
    fixture(
        "embedding_mask_jzs1_last",
        "Embedding(mask_zero) -> JZS1(5), last; front padding",
        lambda: [Embedding(fx.VOCAB, fx.EMBED_DIM, mask_zero=True), JZS1(U)],
        lambda rng: fx.padded_ids(rng, "pre"),
    )
    fixture(
        "masking_simple_rnn",
        "Masking(0.) -> SimpleRNN(5, seq); row 0 front-padded, row 1 back-padded",
        lambda: [Masking(0.0, input_shape=(None, F)), SimpleRNN(U, return_sequences=True)],
        fx.zero_padded_sequence,
    )
    fixture(
        "unsupported_custom_activation",
        "SimpleRNN(5, activation=scaled_tanh): a Python function, saved by its name; must be refused",
        lambda: [SimpleRNN(U, input_dim=F, activation=scaled_tanh)],
    )


def keras03_fixtures():
    F, U, B, T = fx.FEATURES, fx.UNITS, fx.BATCH, fx.STEPS

    def chunks(rng):
        return [fx.sequence(rng) for _ in range(fx.CALLS)]

    fixture(
        "simple_rnn",
        "SimpleRNN(5), Keras 0.3 defaults (activation tanh), sequences",
        lambda: [SimpleRNN(U, input_dim=F, return_sequences=True)],
    )
    fixture(
        "gru",
        "GRU(5), defaults (tanh, inner hard_sigmoid), sequences",
        lambda: [GRU(U, input_dim=F, return_sequences=True)],
    )
    fixture("lstm", "LSTM(5), defaults (tanh, inner hard_sigmoid), last", lambda: [LSTM(U, input_dim=F)])
    fixture(
        "simple_rnn_go_backwards",
        "SimpleRNN(5, go_backwards=True), sequences",
        lambda: [SimpleRNN(U, input_dim=F, go_backwards=True, return_sequences=True)],
    )
    fixture(
        "gru_go_backwards_last",
        "GRU(5, go_backwards=True, activation='sigmoid'), last",
        lambda: [GRU(U, input_dim=F, go_backwards=True, activation="sigmoid")],
    )
    fixture(
        "lstm_go_backwards",
        "LSTM(5, go_backwards=True), sequences",
        lambda: [LSTM(U, input_dim=F, go_backwards=True, return_sequences=True)],
    )
    fixture(
        "lstm_dropout",
        "LSTM(5, dropout_W=0.3, dropout_U=0.2): inference ignores dropout",
        lambda: [LSTM(U, input_dim=F, dropout_W=0.3, dropout_U=0.2, return_sequences=True)],
    )
    fixture(
        "gru_dropout_last",
        "GRU(5, dropout_W=0.4, dropout_U=0.5), last",
        lambda: [GRU(U, input_dim=F, dropout_W=0.4, dropout_U=0.5)],
    )
    fixture(
        "simple_rnn_stateful",
        "SimpleRNN(5, stateful=True, batch_input_shape=(2, 4, 3)), sequences, 3 consecutive predict calls",
        lambda: [SimpleRNN(U, batch_input_shape=(B, T, F), stateful=True, return_sequences=True)],
        chunks,
        stateful=True,
    )
    fixture(
        "gru_stateful_last",
        "GRU(5, stateful=True), last, 3 consecutive calls",
        lambda: [GRU(U, batch_input_shape=(B, T, F), stateful=True)],
        chunks,
        stateful=True,
    )
    fixture(
        "lstm_stateful",
        "LSTM(5, stateful=True), sequences, 3 consecutive calls",
        lambda: [LSTM(U, batch_input_shape=(B, T, F), stateful=True, return_sequences=True)],
        chunks,
        stateful=True,
    )
    fixture(
        "lstm_stateful_go_backwards",
        "LSTM(5, stateful=True, go_backwards=True), sequences,"
        " 3 consecutive calls (each chunk reversed on its own, state carried)",
        lambda: [LSTM(U, batch_input_shape=(B, T, F), stateful=True, go_backwards=True, return_sequences=True)],
        chunks,
        stateful=True,
    )
    fixture(
        "stack_stateful",
        "LSTM(5, stateful, seq) -> GRU(4, stateful) -> Dense(2), 3 calls",
        lambda: [
            LSTM(U, batch_input_shape=(B, T, F), stateful=True, return_sequences=True),
            GRU(4, stateful=True),
            Dense(2),
        ],
        chunks,
        stateful=True,
    )
    fixture(
        "embedding_mask_lstm_pre",
        "Embedding(6, 3, mask_zero=True) -> LSTM(5, seq); front padding, row 1 has a zero inside",
        lambda: [Embedding(fx.VOCAB, fx.EMBED_DIM, mask_zero=True), LSTM(U, return_sequences=True)],
        lambda rng: fx.padded_ids(rng, "pre"),
    )
    fixture(
        "embedding_mask_gru_post_backwards",
        "Embedding(mask_zero) -> GRU(5, go_backwards, seq); back padding",
        lambda: [Embedding(fx.VOCAB, fx.EMBED_DIM, mask_zero=True), GRU(U, go_backwards=True, return_sequences=True)],
        lambda rng: fx.padded_ids(rng, "post"),
    )
    fixture(
        "masking_simple_rnn",
        "Masking(0.) -> SimpleRNN(5, seq); row 0 front-padded, row 1 back-padded",
        lambda: [Masking(0.0, input_shape=(T, F)), SimpleRNN(U, return_sequences=True)],
        fx.zero_padded_sequence,
    )
    fixture(
        "unsupported_custom_activation",
        "LSTM(5, activation=scaled_tanh): a Python function, saved by its name; must be refused",
        lambda: [LSTM(U, input_dim=F, activation=scaled_tanh)],
    )


def unsupported_layer():
    """A Keras 0.x JSON naming a layer class that never existed in that version."""
    config = json.loads((OUT / "lstm.json").read_text())
    config["layers"][0]["name"] = "CuDNNLSTM"
    fx.write_text(OUT / "unsupported_layer.json", json.dumps(config))
    print(GENERATION, "unsupported_layer ok (lstm.json with the class renamed CuDNNLSTM; weights: lstm.weights.h5)")


if __name__ == "__main__":
    keras02_fixtures() if GENERATION == "keras0.2" else keras03_fixtures()
    if not ONLY or "unsupported_layer" in ONLY:
        unsupported_layer()
