"""A failing request fails alone: out-of-vocabulary token ids among valid requests of other clients.

The model is real Keras (Embedding -> LSTM -> Dense), exported stateful; Keras is the oracle. Each
case runs twice: with the signature the exporter writes now (which records the Embedding's
vocabulary, so validation refuses a bad id before batching) and with the field removed, as in a
signature written before it existed (so the bad id reaches ONNX Runtime inside a batch, and the
batcher must rerun the others without it).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import keras
import numpy as np
import pytest

from seqserve.batching import Batcher
from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.errors import InvalidInput
from seqserve.export import export_model
from seqserve.inference import InferRequest, Tensor
from seqserve.server import build_dataplane
from seqserve.store.signature import Signature

VOCAB = 12


def _keras_model() -> keras.Model:
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(VOCAB, 4, name="embedding")(tokens)
    x = keras.layers.LSTM(5, return_sequences=True, name="lstm")(x)
    model = keras.Model(tokens, keras.layers.Dense(2, name="score")(x))
    rng = np.random.default_rng(3)
    model.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


@pytest.fixture(scope="module")
def keras_and_stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, dict[str, Path]]:
    root = tmp_path_factory.mktemp("isolation")
    model = _keras_model()
    model.save(root / "m.keras")
    stores = {}
    for kind in ("recorded", "old"):
        stores[kind] = root / kind
        export_model(root / "m.keras", "words", store=stores[kind], stateful=True, progress=False)
    old = stores["old"] / "words" / "1" / "signature.json"
    data = json.loads(old.read_text())
    data.pop("vocabulary_sizes", None)  # as written before the field existed
    old.write_text(json.dumps(data))
    return model, stores


@pytest.fixture(params=["recorded-loop", "recorded-thread", "old-loop", "old-thread"])
async def plane(
    keras_and_stores: tuple[keras.Model, dict[str, Path]], request: pytest.FixtureRequest
) -> AsyncIterator[DataPlane]:
    kind, compute = request.param.split("-")
    settings = Settings(
        store=keras_and_stores[1][kind],
        device="cpu",
        max_batch_size=64,
        max_queue_delay=0.05,
        sequence_batch_delay=0.05,
        batch_compute=compute,
    )
    p = build_dataplane(settings)
    yield p
    await p.close()


def _request(tokens: np.ndarray, **parameters: object) -> InferRequest:
    return InferRequest("words", inputs=[Tensor("tokens", "INT32", tokens)], parameters=dict(parameters))


def _keras(model: keras.Model, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(tokens.astype(np.int32), verbose=0))


def test_the_export_records_the_vocabulary_of_a_token_id_input(
    keras_and_stores: tuple[keras.Model, dict[str, Path]],
) -> None:
    stores = keras_and_stores[1]
    assert Signature.read(stores["recorded"] / "words" / "1").vocabulary_sizes == {"tokens": VOCAB}
    assert Signature.read(stores["old"] / "words" / "1").vocabulary_sizes == {}


async def test_a_bad_stateless_request_among_valid_ones_fails_alone(
    plane: DataPlane, keras_and_stores: tuple[keras.Model, dict[str, Path]]
) -> None:
    model = keras_and_stores[0]
    rng = np.random.default_rng(0)
    good = [rng.integers(0, VOCAB, (1 + i % 2, 4)).astype(np.int32) for i in range(6)]
    bad = np.array([[1, 2, VOCAB + 3, 4]], np.int32)
    requests = [_request(t) for t in good[:3]] + [_request(bad)] + [_request(t) for t in good[3:]]
    results = await asyncio.gather(*map(plane.infer, requests), return_exceptions=True)
    failed = results.pop(3)
    for tokens, result in zip(good, results, strict=True):
        assert not isinstance(result, BaseException), result
        np.testing.assert_allclose(result.outputs[0].data, _keras(model, tokens), atol=1e-5, rtol=0)
    assert isinstance(failed, InvalidInput), failed
    assert str(VOCAB + 3) in str(failed) and "[ONNXRuntimeError]" not in str(failed), failed
    stats = plane.store.get_ready("words").runner.batch_stats
    assert stats is not None
    if plane.store.get_ready("words").runner.signature.vocabulary_sizes:
        assert "input 'tokens'" in str(failed) and f"0 to {VOCAB - 1}" in str(failed), failed
        assert stats.requests == 6  # refused before batching
    else:
        assert "Gather 'embedding" in str(failed), failed  # ONNX Runtime names the node, not the input
        assert max(stats.sizes) >= 7, stats.sizes  # the bad one was batched with the others


async def test_a_negative_token_id_is_refused_where_recorded(plane: DataPlane) -> None:
    if not plane.store.get_ready("words").runner.signature.vocabulary_sizes:
        pytest.skip("ONNX Runtime's Gather takes negative ids from the end: only the recorded range catches them")
    with pytest.raises(InvalidInput, match=rf"'tokens'.*-1.*0 to {VOCAB - 1}"):
        await plane.infer(_request(np.array([[3, -1]], np.int32)))


async def test_a_bad_sequence_step_among_valid_ones_fails_alone_and_keeps_its_state(
    plane: DataPlane, keras_and_stores: tuple[keras.Model, dict[str, Path]]
) -> None:
    model = keras_and_stores[0]
    rng = np.random.default_rng(1)
    first = {sid: rng.integers(0, VOCAB, (1, 3)).astype(np.int32) for sid in range(1, 6)}
    second = {sid: rng.integers(0, VOCAB, (1, 2)).astype(np.int32) for sid in first}
    await asyncio.gather(*(plane.infer(_request(t, sequence_id=sid, sequence_start=True)) for sid, t in first.items()))
    bad = np.array([[VOCAB, 0]], np.int32)
    steps = [_request(bad if sid == 5 else t, sequence_id=sid) for sid, t in second.items()]
    results = await asyncio.gather(*map(plane.infer, steps), return_exceptions=True)
    assert isinstance(results[4], InvalidInput), results[4]
    for sid, result in zip(list(second)[:4], results[:4], strict=True):
        assert not isinstance(result, BaseException), result
        whole = np.concatenate([first[sid], second[sid]], axis=1)
        np.testing.assert_allclose(result.outputs[0].data, _keras(model, whole)[:, 3:], atol=1e-5, rtol=0)
    # The failed step changed nothing: the session continues from its first step.
    again = await plane.infer(_request(second[5], sequence_id=5))
    whole = np.concatenate([first[5], second[5]], axis=1)
    np.testing.assert_allclose(again.outputs[0].data, _keras(model, whole)[:, 3:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("compute_thread", [False, True])
async def test_the_batcher_reruns_a_failed_batch_without_the_failing_requests(compute_thread: bool) -> None:
    calls: list[int] = []

    def refuses_negatives(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        calls.append(len(feeds["x"]))
        if (feeds["x"] < 0).any():
            raise InvalidInput("x holds a negative value")
        return {"y": feeds["x"] * 2}

    batcher = Batcher(refuses_negatives, compute_thread, max_batch_size=64, max_queue_delay=0.05)
    values = [1, 2, -3, 4, 5, 6, -7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    results = await asyncio.gather(
        *(batcher.run({"x": np.full((1, 1), v, np.float32)}) for v in values), return_exceptions=True
    )
    batcher.close()
    await batcher.wait_closed()
    for v, result in zip(values, results, strict=True):
        if v < 0:
            assert isinstance(result, InvalidInput)
        else:
            assert not isinstance(result, BaseException) and result["y"][0, 0] == 2 * v
    assert calls[0] == 16  # one batch first; then halves, so far fewer runs than one per request
    assert len(calls) < 16, calls
