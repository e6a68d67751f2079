"""The Redis store at the speed of one process: a batched run's saves are one round trip, and a
replica's own copy of a session serves its next step without a read, stale copies caught.

Two data planes on one real redis-server stand for two replicas; Keras is the oracle.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import keras
import numpy as np
import pytest
import redis

from helpers.keras_models import stateful_lstm
from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.inference import InferRequest, Tensor
from seqserve.server import build_dataplane
from seqserve.sessions.redis_store import RedisStateStore

F, U, STEPS = 3, 5, 8


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Path]:
    return stateful_lstm(tmp_path_factory.mktemp("keras"), F, U, seed=4)


def _plane(store: Path, url: str) -> DataPlane:
    return build_dataplane(Settings(store=store, device="cpu", sessions=url))


def _step(x: np.ndarray, sequence: object, **control: object) -> InferRequest:
    return InferRequest("lstm", inputs=[Tensor("x", "FP32", x)], parameters={"sequence_id": sequence, **control})


def _evalsha_calls(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.fixture()
def fresh_redis(redis_url: str) -> str:
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
        client.config_resetstat()
    return redis_url


async def test_a_batched_run_saves_all_its_sessions_in_one_round_trip(
    keras_model: tuple[keras.Model, Path], fresh_redis: str
) -> None:
    _, store = keras_model
    plane = _plane(store, fresh_redis)
    sessions = 16
    xs = np.random.default_rng(0).standard_normal((sessions, 1, 2, F)).astype(np.float32)
    try:
        for k in range(sessions):
            await plane.infer(_step(xs[k][:, :1], k + 1, sequence_start=True))
        redis_store = plane.sessions.store
        assert isinstance(redis_store, RedisStateStore)
        trips, saves = redis_store.round_trips, _evalsha_calls(fresh_redis)
        runs = plane.store.get_ready("lstm").runner.batch_stats.runs
        # Every session's next step at once: one batched ORT run, every state saved...
        await asyncio.gather(*(plane.infer(_step(xs[k][:, 1:], k + 1)) for k in range(sessions)))
        assert plane.store.get_ready("lstm").runner.batch_stats.runs == runs + 1
        # ...by one script call (one Redis, one bucket), in one round trip, and nothing read: each
        # session was this replica's copy.
        assert _evalsha_calls(fresh_redis) - saves == 1
        assert redis_store.round_trips - trips == 1
        assert "seqserve_session_store_round_trips_total" in plane.metrics.exposition().decode()
    finally:
        await plane.close()


@pytest.mark.parametrize("numbered", [False, True], ids=["unnumbered", "numbered"])
async def test_steps_alternating_between_replicas_give_keras_outputs(
    keras_model: tuple[keras.Model, Path], fresh_redis: str, numbered: bool
) -> None:
    """A, B, A, B...: each replica's copy is one step behind every time it is used again; the
    stale copy is detected, the stored state reloaded, and each step applied once."""
    model, store = keras_model
    x = np.random.default_rng(1).standard_normal((2, STEPS, F)).astype(np.float32)
    expected = np.asarray(model.predict(x, verbose=0))
    planes = {"A": _plane(store, fresh_redis), "B": _plane(store, fresh_redis)}
    schedule = "ABBBAABB"  # B has no copy at step 2; A's is stale at step 5 and B's at step 7
    try:
        outputs = []
        for t, name in enumerate(schedule):
            control = {"sequence_start": t == 0} | ({"sequence_step": t + 1} if numbered else {})
            response = await planes[name].infer(_step(x[:, t : t + 1], "alternating", **control))
            outputs.append(response.outputs[0].data)
        np.testing.assert_allclose(np.concatenate(outputs, axis=1), expected, atol=1e-5)

        def total(metric: str) -> float:
            return sum(p.metrics.registry.get_sample_value(metric) or 0 for p in planes.values())

        # Two stale copies, each reloaded once; a numbered step's gap check catches it before the
        # run, an unnumbered one's compare-and-set after it. Nothing was refused.
        assert total("seqserve_session_reloads_total") == 2
        assert total("seqserve_session_conflicts_total") == (0 if numbered else 2)
        assert (await planes["A"].session_api.get("lstm", "alternating")).step == STEPS
    finally:
        for plane in planes.values():
            await plane.close()
