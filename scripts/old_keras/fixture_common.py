"""Shared helpers of the old-Keras fixture writers (run inside the envs of setup_envs.sh).

Plain NumPy and the standard library only: this module is imported by Keras 0.2 on Theano as
well as by tf_keras 2.21, so it must not touch either.
"""

import json
import sys
import zlib
from importlib.metadata import version
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "old_keras"
BATCH, STEPS, FEATURES, UNITS = 2, 4, 3, 5  # all different, so a transposed kernel shows
CALLS = 3  # consecutive predict calls of a stateful fixture
VOCAB, EMBED_DIM = 6, 3
WEIGHT_RANGE, INPUT_SCALE = 0.5, 2.0


def rng_for(name):
    """A generator seeded from the fixture's name, so a rerun writes the same numbers."""
    return np.random.RandomState(zlib.crc32(name.encode()))


def out_dir(generation):
    path = FIXTURES / generation
    path.mkdir(parents=True, exist_ok=True)
    return path


def random_weights(rng, shapes):
    """uniform(-0.5, 0.5) for every weight, biases included, so gates sit away from 0.5."""
    return [rng.uniform(-WEIGHT_RANGE, WEIGHT_RANGE, size=shape).astype("float32") for shape in shapes]


def sequence(rng, batch=BATCH, steps=STEPS, features=FEATURES):
    return (rng.standard_normal((batch, steps, features)) * INPUT_SCALE).astype("float32")


def token_ids(rng, lengths, steps=STEPS, padding="pre"):
    """Integer ids in 1..VOCAB-1 with zero padding at the front ("pre") or the back ("post")."""
    ids = np.zeros((len(lengths), steps), dtype="int32")
    for row, length in enumerate(lengths):
        tokens = rng.randint(1, VOCAB, size=length)
        if padding == "pre":
            ids[row, steps - length :] = tokens
        else:
            ids[row, :length] = tokens
    return ids


def write_npz(path, keras_version, backend, description, arrays):
    """NAME.npz: arrays plus which Keras wrote it, on which backend, and what the model is."""
    meta = {
        "keras_version": np.array(keras_version),
        "backend": np.array(backend),
        "python": np.array(sys.version.split()[0]),
        "numpy": np.array(np.__version__),
        "description": np.array(description),
    }
    np.savez(path, **meta, **{key: np.asarray(value) for key, value in arrays.items()})


def package_version(name):
    return version(name)


def write_text(path, text):
    Path(path).write_text(text if text.endswith("\n") else text + "\n")


def write_json(path, config):
    write_text(path, json.dumps(config, indent=1, sort_keys=True))


def zlib_seed(name):
    """A seed for np.random (Keras' own initializers draw from it) from the fixture's name."""
    return zlib.crc32(name.encode()) % (2**31)


def padded_ids(rng, padding):
    """Token ids: row 0 padded, row 1 full length with a zero inside (shows each generation's masking rule)."""
    ids = token_ids(rng, [2, STEPS], padding=padding)
    ids[1, 1] = 0
    return [ids]


def zero_padded_sequence(rng):
    """A sequence whose row 0 is zero-padded at the front and row 1 at the back (for Masking)."""
    x = sequence(rng)
    x[0, :2] = 0.0
    x[1, -1] = 0.0
    return [x]
