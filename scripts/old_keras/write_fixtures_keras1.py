"""Write the Keras 1.2.2 fixtures of tests/fixtures/old_keras/keras1.

Run inside the Keras 1.2.2 env (made by setup_envs.sh):
    bench/.envs/keras1/bin/python scripts/old_keras/write_fixtures_keras1.py [NAME ...]

Keras 1 saves a model either whole, `model.save()` (one HDF5: `model_config` attribute plus
`model_weights` group), or as an architecture (`to_json` / `to_yaml`) plus `save_weights`. Each
fixture NAME is written both ways: NAME.h5, NAME.json, NAME.yaml, NAME.weights.h5, and NAME.npz
with the inputs `x` and Keras' own `predict` output `y` (a stateful model's consecutive calls as
x_0, y_0, x_1, ...). Weights uniform(-0.5, 0.5), embeddings and inputs normal(0, 2), seeded from
the fixture's name. Every supported fixture is reloaded both ways and predicted again.
"""

import json
import os
import sys

import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(__file__))
import fixture_common as fx  # noqa: E402
import keras  # noqa: E402
from keras import backend as K  # noqa: E402
from keras.layers import GRU, LSTM, Dense, Embedding, Input, Masking, SimpleRNN  # noqa: E402
from keras.models import Model, Sequential, load_model, model_from_json  # noqa: E402

KERAS = keras.__version__
assert KERAS == "1.2.2" and K.backend() == "theano", (KERAS, K.backend())
GENERATION = "keras1"
OUT = fx.out_dir(GENERATION)
ONLY = set(sys.argv[1:])  # fixture names to (re)write; none: all
CUSTOM = {}


def scaled_tanh(x):
    """A custom activation: Keras 1 writes its __name__, which no reader can resolve."""
    return 1.7 * K.tanh(x)


def randomize(model, rng):
    for layer in model.layers:
        shapes = [w.shape for w in layer.get_weights()]
        if not shapes:
            continue
        if isinstance(layer, Embedding):
            layer.set_weights([(rng.standard_normal(shapes[0]) * fx.INPUT_SCALE).astype("float32")])
        else:
            layer.set_weights(fx.random_weights(rng, shapes))


def predict_all(model, inputs, stateful):
    if stateful:
        model.reset_states()
    return [model.predict(x, batch_size=fx.BATCH) for x in inputs]


def save(name, model, description, inputs, stateful):
    outputs = predict_all(model, inputs, stateful)
    arrays = {}
    for i, (x, y) in enumerate(zip(inputs, outputs, strict=True)):
        if stateful:
            arrays[f"x_{i}"], arrays[f"y_{i}"] = x, y
        else:
            arrays["x"], arrays["y"] = x, y
    base = OUT / name
    model.save(str(base) + ".h5")
    fx.write_text(str(base) + ".json", model.to_json())
    fx.write_text(str(base) + ".yaml", model.to_yaml())
    model.save_weights(str(base) + ".weights.h5", overwrite=True)
    fx.write_npz(str(base) + ".npz", KERAS, "theano", description, arrays)

    yaml_config = yaml.load((OUT / (name + ".yaml")).read_text(), Loader=yaml.UnsafeLoader)
    assert json.loads(json.dumps(yaml_config)) == json.loads(model.to_json()), name
    if name.startswith("unsupported"):
        return print(GENERATION, name, "written (not reloaded)")
    again_whole = load_model(str(base) + ".h5")
    again_parts = model_from_json((OUT / (name + ".json")).read_text())
    again_parts.load_weights(str(base) + ".weights.h5")
    for again in (again_whole, again_parts):
        for got, want in zip(predict_all(again, inputs, stateful), outputs, strict=True):
            np.testing.assert_allclose(got, want, atol=1e-6)
    print(GENERATION, name, "ok", [o.shape for o in outputs])


def fixture(name, description, build, x=None, stateful=False):
    if ONLY and name not in ONLY:
        return
    rng = fx.rng_for(GENERATION + "/" + name)
    np.random.seed(fx.zlib_seed(name))  # Keras' own initializers draw from np.random
    model = build()
    randomize(model, rng)
    if x is None:
        x = [fx.sequence(rng)]
    elif callable(x):
        x = x(rng)
    save(name, model, description, x, stateful)


def sequential(*layers):
    model = Sequential()
    for layer in layers:
        model.add(layer)
    return model


def chunks(rng):
    return [fx.sequence(rng) for _ in range(fx.CALLS)]


def functional_lstm():
    inputs = Input(shape=(fx.STEPS, fx.FEATURES), name="x")
    hidden = LSTM(fx.UNITS, return_sequences=True, consume_less="gpu", name="encoder")(inputs)
    outputs = Dense(2, name="y")(hidden)
    return Model(input=inputs, output=outputs)


def main():
    F, U, B, T = fx.FEATURES, fx.UNITS, fx.BATCH, fx.STEPS
    for cls in (SimpleRNN, GRU, LSTM):
        for mode, sequences in (("cpu", True), ("mem", False), ("gpu", True)):
            stem = {"SimpleRNN": "simple_rnn", "GRU": "gru", "LSTM": "lstm"}[cls.__name__]
            name = f"{stem}_{mode}" + ("" if sequences else "_last")
            fixture(
                name,
                f"{cls.__name__}(5, consume_less='{mode}'), " + ("sequences" if sequences else "last output"),
                lambda cls=cls, mode=mode, sequences=sequences: sequential(
                    cls(U, input_dim=F, consume_less=mode, return_sequences=sequences)
                ),
            )
    fixture(
        "lstm_gpu_last",
        "LSTM(5, consume_less='gpu'), last output",
        lambda: sequential(LSTM(U, input_dim=F, consume_less="gpu")),
    )
    fixture(
        "gru_gpu_last_relu_sigmoid",
        "GRU(5, consume_less='gpu', activation='relu', inner_activation='sigmoid'), last",
        lambda: sequential(GRU(U, input_dim=F, consume_less="gpu", activation="relu", inner_activation="sigmoid")),
    )
    fixture(
        "lstm_go_backwards",
        "LSTM(5, go_backwards=True), sequences",
        lambda: sequential(LSTM(U, input_dim=F, go_backwards=True, return_sequences=True)),
    )
    fixture(
        "gru_go_backwards_gpu_last",
        "GRU(5, go_backwards=True, consume_less='gpu'), last",
        lambda: sequential(GRU(U, input_dim=F, go_backwards=True, consume_less="gpu")),
    )
    fixture(
        "simple_rnn_go_backwards_mem",
        "SimpleRNN(5, go_backwards=True, consume_less='mem'), sequences",
        lambda: sequential(SimpleRNN(U, input_dim=F, go_backwards=True, consume_less="mem", return_sequences=True)),
    )
    fixture(
        "lstm_dropout",
        "LSTM(5, dropout_W=0.3, dropout_U=0.2, input_length=4): inference ignores dropout",
        lambda: sequential(LSTM(U, input_dim=F, input_length=T, dropout_W=0.3, dropout_U=0.2, return_sequences=True)),
    )
    fixture(
        "masking_lstm",
        "Masking(0.) -> LSTM(5, seq); row 0 front-padded, row 1 back-padded",
        lambda: sequential(Masking(0.0, input_shape=(T, F)), LSTM(U, return_sequences=True)),
        fx.zero_padded_sequence,
    )
    fixture(
        "masking_gru_gpu_go_backwards",
        "Masking(0.) -> GRU(5, consume_less='gpu', go_backwards, seq)",
        lambda: sequential(
            Masking(0.0, input_shape=(T, F)), GRU(U, consume_less="gpu", go_backwards=True, return_sequences=True)
        ),
        fx.zero_padded_sequence,
    )
    fixture(
        "masking_simple_rnn_last",
        "Masking(0.) -> SimpleRNN(5), last",
        lambda: sequential(Masking(0.0, input_shape=(T, F)), SimpleRNN(U)),
        fx.zero_padded_sequence,
    )
    fixture(
        "embedding_mask_lstm_pre",
        "Embedding(6, 3, mask_zero=True, input_length=4) -> LSTM(5, seq); front padding, row 1 has a zero inside",
        lambda: sequential(
            Embedding(fx.VOCAB, fx.EMBED_DIM, mask_zero=True, input_length=T), LSTM(U, return_sequences=True)
        ),
        lambda rng: fx.padded_ids(rng, "pre"),
    )
    fixture(
        "embedding_mask_gru_post_last",
        "Embedding(mask_zero) -> GRU(5), last; back padding",
        lambda: sequential(Embedding(fx.VOCAB, fx.EMBED_DIM, mask_zero=True, input_length=T), GRU(U)),
        lambda rng: fx.padded_ids(rng, "post"),
    )
    fixture(
        "simple_rnn_stateful",
        "SimpleRNN(5, stateful=True, batch_input_shape=(2, 4, 3)), sequences, 3 consecutive predict calls",
        lambda: sequential(SimpleRNN(U, batch_input_shape=(B, T, F), stateful=True, return_sequences=True)),
        chunks,
        stateful=True,
    )
    fixture(
        "lstm_stateful_gpu",
        "LSTM(5, stateful=True, consume_less='gpu'), sequences, 3 calls",
        lambda: sequential(
            LSTM(U, batch_input_shape=(B, T, F), stateful=True, consume_less="gpu", return_sequences=True)
        ),
        chunks,
        stateful=True,
    )
    fixture(
        "gru_stateful_go_backwards_last",
        "GRU(5, stateful=True, go_backwards=True), last, 3 calls (each chunk reversed on its own, state carried)",
        lambda: sequential(GRU(U, batch_input_shape=(B, T, F), stateful=True, go_backwards=True)),
        chunks,
        stateful=True,
    )
    fixture(
        "stack",
        "LSTM(5, seq, 'cpu') -> GRU(4, seq, 'gpu') -> SimpleRNN(3) -> Dense(2)",
        lambda: sequential(
            LSTM(U, input_dim=F, return_sequences=True),
            GRU(4, consume_less="gpu", return_sequences=True),
            SimpleRNN(3),
            Dense(2),
        ),
    )
    fixture(
        "functional_lstm",
        "functional Model: Input 'x' -> LSTM 'encoder'(5, seq, 'gpu') -> Dense 'y'(2)",
        functional_lstm,
    )
    fixture(
        "unsupported_custom_activation",
        "GRU(5, activation=scaled_tanh): a Python function, saved by its name; must be refused",
        lambda: sequential(GRU(U, input_dim=F, activation=scaled_tanh)),
    )
    if not ONLY or "unsupported_layer" in ONLY:
        config = json.loads((OUT / "lstm_cpu.json").read_text())
        config["config"][0]["class_name"] = "JZS1"
        fx.write_text(OUT / "unsupported_layer.json", json.dumps(config))
        print(
            GENERATION,
            "unsupported_layer written (lstm_cpu.json with the class renamed JZS1,"
            " which Keras 1 never had; weights: lstm_cpu.weights.h5)",
        )


if __name__ == "__main__":
    main()
