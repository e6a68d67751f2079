"""Keras `stateful=True` on the server: a sequence streamed in chunks over REST, gRPC unary and gRPC
streaming gives what Keras `predict` gives on the same chunks of a stateful model (<= 1e-5),
including `reset_states` at a sequence start.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np
import pytest

from helpers.server import RunningServer, running_server
from seqserve.export import export_model
from seqserve.store.signature import Signature

BATCH, STEPS, FEATURES = 2, 6, 3
L = keras.layers


def _seq_model(*layers: Callable[[], keras.layers.Layer]) -> keras.Model:
    inputs = keras.Input(batch_shape=(BATCH, None, FEATURES), name="x")
    x = inputs
    for make in layers:
        x = make()(x)
    return keras.Model(inputs, x)


def _conv_lstm() -> keras.Model:
    inputs = keras.Input(batch_shape=(BATCH, None, 5, 5, 1), name="x")
    outputs = L.ConvLSTM2D(2, 3, padding="same", stateful=True, return_sequences=True)(inputs)
    return keras.Model(inputs, outputs)


MODELS: dict[str, Callable[[], keras.Model]] = {
    "lstm": lambda: _seq_model(lambda: L.LSTM(4, stateful=True, return_sequences=True)),
    "gru": lambda: _seq_model(lambda: L.GRU(4, stateful=True, return_sequences=True)),
    "simple_rnn": lambda: _seq_model(lambda: L.SimpleRNN(4, stateful=True, return_sequences=True)),
    "stacked": lambda: _seq_model(
        lambda: L.LSTM(4, stateful=True, return_sequences=True),
        lambda: L.GRU(3, stateful=True, return_sequences=True),
    ),
    "bidirectional": lambda: _seq_model(lambda: L.Bidirectional(L.LSTM(3, stateful=True, return_sequences=True))),
    "conv_lstm": _conv_lstm,
}


class Case:
    def __init__(self, model: keras.Model, signature: Signature, x: np.ndarray) -> None:
        self.model, self.signature, self.x = model, signature, x
        self.output = signature.outputs[0].name

    def keras_chunks(self, chunk: int) -> np.ndarray:
        """Keras' own answer: reset_states, then predict chunk after chunk on the stateful model."""
        for layer in self.model.layers:
            if hasattr(layer, "reset_states"):
                layer.reset_states()
        parts = [
            self.model.predict(self.x[:, t : t + chunk], batch_size=BATCH, verbose=0) for t in range(0, STEPS, chunk)
        ]
        return np.concatenate(parts, axis=1)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Case]]:
    root = tmp_path_factory.mktemp("keras")
    store = root / "store"
    rng = np.random.default_rng(0)
    built = {}
    for name, build in MODELS.items():
        keras.utils.set_random_seed(1)
        model = build()
        model.save(root / f"{name}.keras")
        export_model(root / f"{name}.keras", name=name, store=store, progress=False)
        shape = (BATCH, STEPS, *model.inputs[0].shape[2:])
        built[name] = Case(model, Signature.read(store / name / "1"), rng.standard_normal(shape).astype(np.float32))
    return store, built


@pytest.fixture(scope="module")
def server(cases: tuple[Path, dict[str, Case]]) -> Iterator[RunningServer]:
    with running_server(cases[0]) as running:
        yield running


def _send_rest(server: RunningServer, name: str, case: Case, chunk: int, sequence_id: int) -> np.ndarray:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http_url)
    parts = []
    for t in range(0, STEPS, chunk):
        x = case.x[:, t : t + chunk]
        tensor = httpclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        result = client.infer(name, [tensor], sequence_id=sequence_id, sequence_start=t == 0)
        parts.append(result.as_numpy(case.output))
    return np.concatenate(parts, axis=1)


def _send_grpc(server: RunningServer, name: str, case: Case, chunk: int, sequence_id: int) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    parts = []
    for t in range(0, STEPS, chunk):
        x = case.x[:, t : t + chunk]
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        parts.append(client.infer(name, [tensor], sequence_id=sequence_id, sequence_start=t == 0).as_numpy(case.output))
    client.close()
    return np.concatenate(parts, axis=1)


def _send_grpc_stream(server: RunningServer, name: str, case: Case, chunk: int, sequence_id: int) -> np.ndarray:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.grpc_url)
    results: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    starts = list(range(0, STEPS, chunk))
    for t in starts:
        x = case.x[:, t : t + chunk]
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        client.async_stream_infer(name, [tensor], sequence_id=sequence_id, sequence_start=t == 0)
    parts = []
    for _ in starts:
        result, error = results.get(timeout=30)
        assert error is None, error
        parts.append(result.as_numpy(case.output))
    client.stop_stream()
    client.close()
    return np.concatenate(parts, axis=1)


PROTOCOLS = {"rest": _send_rest, "grpc": _send_grpc, "grpc_stream": _send_grpc_stream}


@pytest.mark.parametrize("chunk", [1, 3])
@pytest.mark.parametrize("protocol", list(PROTOCOLS))
@pytest.mark.parametrize("name", list(MODELS))
def test_streamed_chunks_match_keras_stateful_predict(
    server: RunningServer, cases: tuple[Path, dict[str, Case]], name: str, protocol: str, chunk: int
) -> None:
    case = cases[1][name]
    expected = case.keras_chunks(chunk)
    send = PROTOCOLS[protocol]
    # The same id twice: the second sequence_start must reset the state like Keras' reset_states.
    for _ in range(2):
        served = send(server, name, case, chunk, sequence_id=1000 + chunk)
        np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)
