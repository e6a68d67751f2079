"""Builds, trains (seconds, on synthetic data) and exports the example models of `model_store/`.

The exported models are committed, so `seqserve serve` needs neither Keras nor this script; run it
(`make examples`) only to rebuild them. Each model mirrors a classic Keras recurrent example:

- chars      character-level LSTM (lstm_text_generation): one-hot characters -> next-char probabilities;
             exported --stateful, so a client can stream one character at a time in a sequence
- sensor     stateful GRU (lstm_stateful): one reading at a time -> the next reading, state carried
- frames     ConvLSTM2D next-frame model (conv_lstm): frames of a moving square -> next frames;
             exported --stateful, so frames can be streamed one at a time
- sentiment  Embedding(mask_zero) + Bidirectional LSTM classifier (imdb_bidirectional_lstm), stateless
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from seqserve.export import export_model  # noqa: E402

ALPHABET = " abcdehilmnorstw."
TEXT = "the cat sat on the mat. the rat ate the hat. a bird was on the wire. " * 40


def chars() -> keras.Model:
    vocab, window = len(ALPHABET), 40
    index = np.array([ALPHABET.index(c) for c in TEXT if c in ALPHABET])
    starts = np.arange(0, len(index) - window - 1, 2)
    x = np.eye(vocab, dtype=np.float32)[np.stack([index[s : s + window] for s in starts])]
    y = np.eye(vocab, dtype=np.float32)[index[starts + window]]
    inputs = keras.Input(shape=(None, vocab), name="chars")
    hidden = keras.layers.LSTM(64, name="lstm")(inputs)
    outputs = keras.layers.Dense(vocab, activation="softmax", name="next_char")(hidden)
    model = keras.Model(inputs, outputs, name="chars")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy")
    model.fit(x, y, epochs=15, batch_size=64, verbose=0)
    return model


def _sensor_model(stateful: bool) -> keras.Model:
    shape = {"batch_shape": (1, None, 1)} if stateful else {"shape": (None, 1)}
    inputs = keras.Input(**shape, name="reading")
    hidden = keras.layers.GRU(16, stateful=stateful, return_sequences=True, name="gru")(inputs)
    outputs = keras.layers.Dense(1, name="next_reading")(hidden)
    return keras.Model(inputs, outputs, name="sensor")


def sensor() -> keras.Model:
    t = np.arange(4001, dtype=np.float32) * 0.1
    signal = np.sin(t) + 0.5 * np.sin(0.31 * t)
    # Train on windows without state (Keras' torch backend cannot backpropagate through a stateful
    # layer's in-place state update), then move the weights into the stateful serving model.
    x = signal[:-1].reshape(-1, 100, 1)
    y = signal[1:].reshape(-1, 100, 1)
    trained = _sensor_model(stateful=False)
    trained.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    trained.fit(x, y, epochs=30, batch_size=8, verbose=0)
    model = _sensor_model(stateful=True)
    model.set_weights(trained.get_weights())
    return model


def _moving_squares(count: int, steps: int, size: int, rng: np.random.Generator) -> np.ndarray:
    movies = np.zeros((count, steps + 1, size, size, 1), dtype=np.float32)
    for movie in movies:
        row, col = rng.integers(0, size - 3, 2)
        d_row, d_col = rng.choice([-1, 1], 2)
        for frame in movie:
            frame[row : row + 3, col : col + 3] = 1.0
            if not 0 <= row + d_row <= size - 3:
                d_row = -d_row
            if not 0 <= col + d_col <= size - 3:
                d_col = -d_col
            row, col = row + d_row, col + d_col
    return movies


def frames() -> keras.Model:
    movies = _moving_squares(64, 8, 16, np.random.default_rng(0))
    inputs = keras.Input(shape=(None, 16, 16, 1), name="frames")
    hidden = keras.layers.ConvLSTM2D(8, 3, padding="same", return_sequences=True, name="conv_lstm")(inputs)
    outputs = keras.layers.Conv3D(1, 3, padding="same", activation="sigmoid", name="next_frames")(hidden)
    model = keras.Model(inputs, outputs, name="frames")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    model.fit(movies[:, :-1], movies[:, 1:], epochs=3, batch_size=16, verbose=0)
    return model


def sentiment() -> keras.Model:
    rng = np.random.default_rng(0)
    vocab, length = 50, 20
    tokens = rng.integers(1, vocab, (1200, length))
    lengths = rng.integers(4, length + 1, 1200)
    for row, n in zip(tokens, lengths, strict=True):
        row[: length - n] = 0  # front padding, as keras.utils.pad_sequences does by default
    labels = ((tokens == 7).sum(1) > (tokens == 9).sum(1)).astype(np.float32)
    inputs = keras.Input(shape=(None,), dtype="int64", name="tokens")
    embedded = keras.layers.Embedding(vocab, 16, mask_zero=True, name="embedding")(inputs)
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(16), name="bilstm")(embedded)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="positive")(hidden)
    model = keras.Model(inputs, outputs, name="sentiment")
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    model.fit(tokens, labels, epochs=3, batch_size=64, verbose=0)
    return model


# name -> (builder, export as stateful: None keeps what the Keras layers say)
EXAMPLES: dict[str, tuple[Callable[[], keras.Model], bool | None]] = {
    "chars": (chars, True),
    "sensor": (sensor, None),
    "frames": (frames, True),
    "sentiment": (sentiment, None),
}


def _replace(target: Path, new: Path) -> None:
    """Swaps in the rebuilt model (version 1 again, not a pile of versions); the old goes once the new is in."""
    target.parent.mkdir(parents=True, exist_ok=True)
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    shutil.move(str(new), str(target))
    shutil.rmtree(old, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, default=Path("model_store"))
    parser.add_argument("names", nargs="*", default=list(EXAMPLES), help="which examples (default: all)")
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names:
            print(f"== {name}: training", flush=True)
            path = Path(tmp) / f"{name}.keras"
            build, stateful = EXAMPLES[name]
            build().save(path)
            report = export_model(path, name=name, store=Path(tmp) / "store", version=1, stateful=stateful)
            print(report.summary(), flush=True)
            _replace(args.store / name, Path(tmp) / "store" / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
