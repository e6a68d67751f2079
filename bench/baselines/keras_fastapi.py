"""Baseline: the service a user writes first — FastAPI calling Keras `model.predict` per step.

The saved model's LSTMs are rebuilt with `return_state=True` and their initial states as inputs
(the usual way to carry state by hand), and each client's states wait in a dict between requests.
JSON in, JSON out, a plain `def` endpoint (FastAPI runs it on its thread pool). Nothing here is
tuned: it is the reference point the issue compares seqserve with, not a straw man either — it is
what the Keras docs lead to.

    KERAS_BACKEND=torch python bench/baselines/keras_fastapi.py --model lstm.keras --port 8080
    POST /step {"session": "a", "x": [256 floats], "start": true} -> {"y": [512 floats]}
"""

from __future__ import annotations

import argparse
import os
import sys
import threading

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, HTTPException  # noqa: E402
from pydantic import BaseModel  # noqa: E402


def with_explicit_states(model: keras.Model) -> tuple[keras.Model, list[int]]:
    """The same LSTM stack taking (x, h1, c1, h2, c2, ...) and returning (y, h1', c1', ...); weights copied."""
    x = keras.Input(model.inputs[0].shape[1:], name="x")
    hidden, state_inputs, state_outputs, units = x, [], [], []
    for layer in model.layers:
        if not isinstance(layer, keras.layers.LSTM):
            continue
        clone = keras.layers.LSTM.from_config({**layer.get_config(), "return_state": True})
        h = keras.Input((layer.units,), name=f"{layer.name}_h")
        c = keras.Input((layer.units,), name=f"{layer.name}_c")
        hidden, h_out, c_out = clone(hidden, initial_state=[h, c])
        clone.set_weights(layer.get_weights())
        state_inputs += [h, c]
        state_outputs += [h_out, c_out]
        units += [layer.units, layer.units]
    return keras.Model([x, *state_inputs], [hidden, *state_outputs]), units


class Step(BaseModel):
    session: str
    x: list[float]
    start: bool = False


def create_app(model_path: str) -> FastAPI:
    model, units = with_explicit_states(keras.saving.load_model(model_path))
    sessions: dict[str, list[np.ndarray]] = {}
    lock = threading.Lock()  # the dict is shared by FastAPI's worker threads
    app = FastAPI()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/step")
    def step(body: Step) -> dict[str, list[float]]:
        with lock:
            states = None if body.start else sessions.get(body.session)
        if states is None:
            if not body.start:
                raise HTTPException(404, f"unknown session {body.session!r}; start it with start=true")
            states = [np.zeros((1, n), np.float32) for n in units]
        x = np.asarray(body.x, np.float32).reshape(1, 1, -1)
        y, *new_states = model.predict([x, *states], verbose=0)
        with lock:
            sessions[body.session] = new_states
        return {"y": y[0, -1].tolist()}

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the .keras file")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.model), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
