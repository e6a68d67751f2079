"""Write the tf.keras 2.x SavedModel fixtures of tests/fixtures/old_keras/tf_savedmodel.

tf.keras 2.0-2.12 wrote a TensorFlow SavedModel directory from `model.save("dir")`; seqserve reads
its `keras_metadata.pb` and variables without TensorFlow. Run in the TensorFlow env:
    bash bench/setup_tf_env.sh
    TF_USE_LEGACY_KERAS=1 bench/.envs/tf/bin/python scripts/old_keras/write_fixtures_tf_savedmodel.py

Each fixture NAME is the directory NAME/ (`model.save(NAME, save_format="tf")`) and NAME.npz
(inputs `x`, tf_keras' own `predict` output `y`; a stateful model's consecutive calls as x_0, y_0,
x_1, ...). Weights uniform(-0.5, 0.5), inputs normal(0, 2), seeded from the fixture's name; every
fixture is reloaded with `load_model` and predicted again. One fixture keeps the default
`save_traces=True` (its saved_model.pb holds the traced call functions, ~250 KB for one GRU); the
others are saved with `save_traces=False`, which leaves what a reader needs (keras_metadata.pb,
the variables bundle and the object graph) at a tenth of the size (a Bidirectional LSTM's traces
alone are 2 MB).
"""

import os
import shutil
import sys

import numpy as np

if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    sys.exit("run with TF_USE_LEGACY_KERAS=1, so that tf.keras is tf_keras (Keras 2)")

sys.path.insert(0, os.path.dirname(__file__))
import fixture_common as fx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

GENERATION = "tf_savedmodel"
OUT = fx.out_dir(GENERATION)
ONLY = set(sys.argv[1:])  # fixture names to (re)write; none: all
layers = keras.layers


def fixture(name, description, build, stateful=False, save_traces=False):
    if ONLY and name not in ONLY:
        return
    rng = fx.rng_for(GENERATION + "/" + name)
    tf.random.set_seed(fx.zlib_seed(name))
    model = build()
    model.set_weights(fx.random_weights(rng, [w.shape for w in model.get_weights()]))
    inputs = [fx.sequence(rng) for _ in range(fx.CALLS if stateful else 1)]

    def predict_all(m):
        if stateful:
            m.reset_states()
        return [m.predict(x, batch_size=fx.BATCH, verbose=0) for x in inputs]

    outputs = predict_all(model)
    arrays = {}
    for i, (x, y) in enumerate(zip(inputs, outputs, strict=True)):
        if stateful:
            arrays[f"x_{i}"], arrays[f"y_{i}"] = x, y
        else:
            arrays["x"], arrays["y"] = x, y
    path = OUT / name
    shutil.rmtree(path, ignore_errors=True)
    if stateful:
        model.reset_states()  # the saved state variables hold zeros, as after reset_states()
    model.save(str(path), save_format="tf", save_traces=save_traces)
    fx.write_npz(OUT / (name + ".npz"), keras.__version__, "tensorflow " + tf.__version__, description, arrays)
    for got, want in zip(predict_all(keras.models.load_model(str(path))), outputs, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    print(GENERATION, name, "ok", [y.shape for y in outputs])


def sequential(*stack, batch_size=None):
    inputs = keras.Input((fx.STEPS, fx.FEATURES), batch_size=batch_size, name="x")
    return keras.Sequential([inputs, *stack])


def main():
    U = fx.UNITS
    fixture("lstm", "LSTM(5, return_sequences=True)", lambda: sequential(layers.LSTM(U, return_sequences=True)))
    fixture(
        "gru_reset_after",
        "GRU(5) (reset_after=True, the TF2 default), last output",
        lambda: sequential(layers.GRU(U, reset_after=True)),
    )
    fixture(
        "gru_reset_before",
        "GRU(5, reset_after=False, return_sequences=True); saved with the default save_traces=True",
        lambda: sequential(layers.GRU(U, reset_after=False, return_sequences=True)),
        save_traces=True,
    )
    fixture(
        "bidirectional_lstm",
        "Bidirectional(LSTM(4, return_sequences=True)), concat",
        lambda: sequential(layers.Bidirectional(layers.LSTM(4, return_sequences=True))),
    )
    fixture(
        "lstm_stateful",
        "LSTM(5, stateful=True, return_sequences=True), batch 2, 3 consecutive predict calls",
        lambda: sequential(layers.LSTM(U, stateful=True, return_sequences=True), batch_size=fx.BATCH),
        stateful=True,
    )


if __name__ == "__main__":
    main()
