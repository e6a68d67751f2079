"""Prove an old-Keras env works: import Keras on Theano and run one tiny LSTM predict.

Run by scripts/old_keras/setup_envs.sh inside each env it makes.
"""

from importlib.metadata import version

import h5py
import numpy as np
import scipy
import theano
import yaml

keras_version = version("keras")  # Keras 0.2.0 has no __version__
major_minor = tuple(int(part) for part in keras_version.split(".")[:2])
x = np.linspace(-1, 1, 2 * 3 * 4).reshape(2, 3, 4).astype("float32")
if major_minor < (1, 0):
    from keras.layers.recurrent import LSTM
    from keras.models import Sequential

    model = Sequential()
    model.add(LSTM(5, input_dim=4))
    model.compile(loss="mse", optimizer="sgd")
else:
    from keras.layers import LSTM
    from keras.models import Sequential

    model = Sequential()
    model.add(LSTM(5, input_shape=(3, 4)))
y = model.predict(x)
assert y.shape == (2, 5) and np.isfinite(y).all(), y
print(
    "keras",
    keras_version,
    "theano",
    theano.__version__,
    "numpy",
    np.__version__,
    "scipy",
    scipy.__version__,
    "h5py",
    h5py.__version__,
    "yaml",
    yaml.__version__,
    "predict ok",
    y.shape,
)
