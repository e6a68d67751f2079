"""Write the Keras 2.3.1-on-Theano fixtures of tests/fixtures/old_keras/keras2_theano.

Run inside the Keras 2.3.1 env (made by setup_envs.sh):
    bench/.envs/keras2_theano/bin/python scripts/old_keras/write_fixtures_keras2_theano.py [NAME ...]

A Keras 2 file records the backend that wrote it (`backend` attribute). Theano's conv2d is a true
convolution (it flips the kernel), TensorFlow's a cross-correlation, so a ConvLSTM2D kernel saved
on Theano is the TensorFlow kernel flipped in both spatial axes; Keras' own loader flips it back
when the backends differ. Each fixture NAME is NAME.h5 (`model.save()`) and NAME.npz (inputs `x`,
Keras' own `predict` output `y`). Weights uniform(-0.5, 0.5), inputs normal(0, 2), seeded from
the fixture's name; every fixture is reloaded with `load_model` and predicted again.
"""

import os
import sys

import numpy as np

# Without a C compiler Theano has no optimized convolution; this lets its AbstractConv2d node run
# its own NumPy/SciPy `perform` (a true convolution, as compiled Theano computes) instead of failing
# the check that some compiled implementation replaced it. Must be set before Theano is imported.
os.environ["THEANO_FLAGS"] += ",optimizer_excluding=AbstractConvCheck"
sys.path.insert(0, os.path.dirname(__file__))
import fixture_common as fx  # noqa: E402
import keras  # noqa: E402
from keras import backend as K  # noqa: E402
from keras.layers import GRU, LSTM, ConvLSTM2D, Dense  # noqa: E402
from keras.models import Sequential, load_model  # noqa: E402

KERAS = keras.__version__
assert KERAS == "2.3.1" and K.backend() == "theano", (KERAS, K.backend())
GENERATION = "keras2_theano"
OUT = fx.out_dir(GENERATION)
ONLY = set(sys.argv[1:])  # fixture names to (re)write; none: all
GRID, CHANNELS, FILTERS, FRAMES = 5, 2, 3, 3


def fixture(name, description, layers, x_shape):
    if ONLY and name not in ONLY:
        return
    rng = fx.rng_for(GENERATION + "/" + name)
    np.random.seed(fx.zlib_seed(name))
    model = Sequential(layers())
    model.set_weights(fx.random_weights(rng, [w.shape for w in model.get_weights()]))
    x = (rng.standard_normal(x_shape) * fx.INPUT_SCALE).astype("float32")
    y = model.predict(x, batch_size=fx.BATCH)
    path = OUT / (name + ".h5")
    model.save(str(path))
    fx.write_npz(OUT / (name + ".npz"), KERAS, "theano", description, {"x": x, "y": y})
    np.testing.assert_allclose(load_model(str(path)).predict(x, batch_size=fx.BATCH), y, atol=1e-6)
    print(GENERATION, name, "ok", y.shape)


def main():
    F, U, B, T = fx.FEATURES, fx.UNITS, fx.BATCH, fx.STEPS
    frames = (B, FRAMES, GRID, GRID, CHANNELS)
    fixture(
        "conv_lstm2d_same",
        "ConvLSTM2D(3, (3, 3), padding='same', return_sequences=True), channels_last",
        lambda: [ConvLSTM2D(FILTERS, (3, 3), padding="same", return_sequences=True, input_shape=frames[1:])],
        frames,
    )
    fixture(
        "conv_lstm2d_valid_3x2_last",
        "ConvLSTM2D(3, (3, 2), padding='valid'), last output; a non-square kernel shows which axis is flipped",
        lambda: [ConvLSTM2D(FILTERS, (3, 2), padding="valid", input_shape=frames[1:])],
        frames,
    )
    fixture(
        "lstm",
        "LSTM(5, return_sequences=True) -> Dense(2) (no convolution: nothing flipped)",
        lambda: [LSTM(U, return_sequences=True, input_shape=(T, F)), Dense(2)],
        (B, T, F),
    )
    fixture(
        "gru_last",
        "GRU(5) (Keras 2.3 default reset_after=False), last output",
        lambda: [GRU(U, input_shape=(T, F))],
        (B, T, F),
    )


if __name__ == "__main__":
    main()
