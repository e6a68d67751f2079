"""Builds the Keras models the GPU tests export and run on CUDA, with Keras' own outputs for them.

The GPU machine has no Keras (and importing torch there after ONNX Runtime's CUDA libraries clashes
on cuDNN: ../shared/gpu/NOTES.md), so Keras runs here, on the CPU, once: each model is saved as
`tests/fixtures/gpu/<name>.keras` beside `<name>.npz` holding its input `x` and Keras' `predict`
output `y`. tests/export/test_gpu_fixtures.py checks on every CI run that they still agree.

    .venv/bin/python scripts/build_gpu_fixtures.py
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import layers  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "gpu"
T, F, U, B = 7, 4, 8, 4

# name -> (layers after the input, input shape without the batch)
MODELS: dict[str, tuple[Callable[[], list[keras.Layer]], tuple[int, ...]]] = {
    "lstm": (lambda: [layers.LSTM(U, return_sequences=True)], (T, F)),
    "lstm_hard_sigmoid": (lambda: [layers.LSTM(U, recurrent_activation="hard_sigmoid", return_sequences=True)], (T, F)),
    "gru": (lambda: [layers.GRU(U, return_sequences=True)], (T, F)),
    "gru_reset_before": (lambda: [layers.GRU(U, reset_after=False, return_sequences=True)], (T, F)),
    "simple_rnn": (lambda: [layers.SimpleRNN(U, return_sequences=True)], (T, F)),
    "masked_lstm": (lambda: [layers.Masking(0.0), layers.LSTM(U, return_sequences=True)], (T, F)),
    "bidirectional_gru": (lambda: [layers.Bidirectional(layers.GRU(U, return_sequences=True))], (T, F)),
    "stacked_cells": (lambda: [layers.RNN(layers.StackedRNNCells([layers.LSTMCell(U), layers.GRUCell(U)]))], (T, F)),
    "conv_lstm2d": (
        lambda: [layers.ConvLSTM2D(8, 3, padding="same", recurrent_activation="hard_sigmoid", return_sequences=True)],
        (4, 16, 16, 4),
    ),
}


def build(name: str) -> tuple[keras.Model, np.ndarray]:
    make, shape = MODELS[name]
    model = keras.Sequential([keras.Input(shape), *make()], name=name)
    rng = np.random.default_rng(sum(map(ord, name)))
    for layer in model.layers:
        layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    x = rng.standard_normal((B, *shape)).astype(np.float32)
    if len(shape) == 2:  # rows padded at the front, at the back, and one with a hole
        x[0, :2] = 0.0
        x[1, 5:] = 0.0
        x[2, 3] = 0.0
    return model, x


def main() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        model, x = build(name)
        model.save(FIXTURES / f"{name}.keras")
        np.savez(FIXTURES / f"{name}.npz", x=x, y=np.asarray(model.predict(x, verbose=0)))
        print(f"wrote {name}.keras and {name}.npz")


if __name__ == "__main__":
    main()
