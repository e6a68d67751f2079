"""Real Keras models exported into a store, for tests that need Keras as the oracle."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from seqserve.export import export_model


def stateful_lstm(directory: Path, features: int, units: int, seed: int) -> tuple[keras.Model, Path]:
    """An LSTM named 'lstm' returning sequences, with random weights, saved in `directory` and
    exported stateful into `directory`/store; returns the model and the store."""
    model = keras.Sequential(
        [keras.Input((None, features), name="x"), keras.layers.LSTM(units, return_sequences=True, name="lstm")]
    )
    rng = np.random.default_rng(seed)
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    model.save(directory / "m.keras")
    export_model(directory / "m.keras", "lstm", store=directory / "store", stateful=True, progress=False)
    return model, directory / "store"
