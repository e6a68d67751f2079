"""Sessions on a real 3-primary Redis Cluster (3 x 2 with replicas, on loopback): spread over every
shard, streamed exactly through a real server, one round trip per shard for a batched run, a
primary's death survived through its replica's promotion, every slot holding a session resharded
to another primary while the sessions step, and two replicas racing on one step advancing it once.
Keras is the oracle."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
import tritonclient.grpc as triton

from helpers.keras_models import stateful_lstm
from helpers.redis_cluster import Cluster, running_cluster
from helpers.server import running_server
from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.errors import SessionConflict, StoreUnavailable
from seqserve.inference import InferRequest, Tensor
from seqserve.server import build_dataplane
from seqserve.sessions.redis_store import RedisStateStore

F, U = 3, 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.fixture(scope="module")
def keras_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, Path]:
    return stateful_lstm(tmp_path_factory.mktemp("keras"), F, U, seed=5)


def _step(x: np.ndarray, sequence: object, **control: object) -> InferRequest:
    return InferRequest("lstm", inputs=[Tensor("x", "FP32", x)], parameters={"sequence_id": sequence, **control})


def _session_keys_per_primary(cluster: Cluster) -> dict[int, int]:
    return {port: len(list(cluster.client(port).scan_iter(match="seqserve:*:s:*"))) for port in cluster.primaries()}


def test_sessions_spread_over_every_shard_and_stream_exactly_through_a_server(
    cluster: Cluster, keras_model: tuple[keras.Model, Path], tmp_path: Path
) -> None:
    model, store = keras_model
    sessions, steps = 24, 6
    xs = np.random.default_rng(1).standard_normal((sessions, 1, steps, F)).astype(np.float32)
    got: list[list[np.ndarray]] = [[] for _ in range(sessions)]
    with (
        running_server(store, "--sessions", cluster.url, log_dir=tmp_path) as server,
        triton.InferenceServerClient(server.grpc_url) as client,
    ):
        for t in range(steps):
            for k in range(sessions):
                tensor = triton.InferInput("x", [1, 1, F], "FP32")
                tensor.set_data_from_numpy(xs[k][:, t : t + 1])
                result = client.infer("lstm", [tensor], sequence_id=k + 1, sequence_start=t == 0)
                got[k].append(result.as_numpy("lstm"))
    spread = _session_keys_per_primary(cluster)
    assert len(spread) == 3 and all(count > 0 for count in spread.values()), spread
    assert sum(spread.values()) >= sessions
    for k in range(sessions):
        np.testing.assert_allclose(np.concatenate(got[k], axis=1), model.predict(xs[k], verbose=0), atol=1e-5)


async def test_a_batched_run_costs_one_round_trip_per_shard_it_touches(
    cluster: Cluster, keras_model: tuple[keras.Model, Path]
) -> None:
    _, store = keras_model
    plane = build_dataplane(Settings(store=store, device="cpu", sessions=cluster.url))
    sessions = 32
    x = np.zeros((1, 1, F), np.float32)
    try:
        for k in range(sessions):
            await plane.infer(_step(x, f"trip-{k}", sequence_start=True))
        redis_store = plane.sessions.store
        assert isinstance(redis_store, RedisStateStore)
        shards = redis_store._shards_of([redis_store._keys(f"lstm/s:trip-{k}")[0] for k in range(sessions)])
        before = redis_store.round_trips
        await asyncio.gather(*(plane.infer(_step(x, f"trip-{k}")) for k in range(sessions)))
        assert shards == 3 and redis_store.round_trips - before == shards
    finally:
        await plane.close()


async def _step_until_answered(plane: DataPlane, request: InferRequest, patience: float = 20.0) -> np.ndarray:
    """Sends a numbered step until it is answered: during a failover the store does not answer (503)."""
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        try:
            return (await plane.infer(request)).outputs[0].data
        except StoreUnavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_sessions_survive_a_primary_killed_and_its_replica_promoted(
    cluster: Cluster, keras_model: tuple[keras.Model, Path]
) -> None:
    model, store = keras_model
    plane = build_dataplane(Settings(store=store, device="cpu", sessions=cluster.url, session_store_timeout=1.0))
    sessions, steps = 12, 6
    xs = np.random.default_rng(2).standard_normal((sessions, 1, steps, F)).astype(np.float32)
    got: list[list[np.ndarray]] = [[] for _ in range(sessions)]
    try:
        for t in range(steps):
            if t == 3:
                # Replication is asynchronous: let every replica acknowledge what its primary has,
                # then kill the primary holding the first session.
                for port in cluster.primaries():
                    cluster.client(port).execute_command("WAIT", 1, 2000)
                redis_store = plane.sessions.store
                assert isinstance(redis_store, RedisStateStore)
                victim = int(redis_store.client.get_node_from_key(redis_store._keys("lstm/s:fail-0")[0]).port)
                cluster.kill(victim)
                await asyncio.to_thread(cluster.wait_healthy)
                assert victim not in cluster.primaries()
            for k in range(sessions):
                request = _step(xs[k][:, t : t + 1], f"fail-{k}", sequence_start=t == 0, sequence_step=t + 1)
                got[k].append(await _step_until_answered(plane, request))
        for k in range(sessions):
            np.testing.assert_allclose(np.concatenate(got[k], axis=1), model.predict(xs[k], verbose=0), atol=1e-5)
    finally:
        await plane.close()


async def test_two_replicas_sending_the_same_step_advance_the_session_once(
    cluster: Cluster, keras_model: tuple[keras.Model, Path]
) -> None:
    model, store = keras_model
    a, b = (build_dataplane(Settings(store=store, device="cpu", sessions=cluster.url)) for _ in range(2))
    steps = 20
    x = np.random.default_rng(3).standard_normal((1, steps, F)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    try:
        await a.infer(_step(x[:, :1], "twice", sequence_start=True, sequence_step=1))
        refused = 0
        for t in range(1, steps):
            request = _step(x[:, t : t + 1], "twice", sequence_step=t + 1)
            outcomes = await asyncio.gather(a.infer(request), b.infer(request), return_exceptions=True)
            answers = [o.outputs[0].data for o in outcomes if not isinstance(o, BaseException)]
            errors = [o for o in outcomes if isinstance(o, BaseException)]
            assert answers and all(isinstance(e, SessionConflict) for e in errors), errors
            refused += len(errors)
            for answer in answers:
                np.testing.assert_allclose(answer, expected[:, t : t + 1], atol=1e-5)
        assert (await a.session_api.get("lstm", "twice")).step == steps
    finally:
        await a.close()
        await b.close()


async def test_sessions_step_on_while_their_slots_are_resharded(
    cluster: Cluster, keras_model: tuple[keras.Model, Path]
) -> None:
    """Every slot holding a session moves to another primary, phase by phase as `redis-cli --cluster
    reshard` moves it, and every session sends its next step in each phase. A step meeting its slot
    half-moved is refused (503: the script did not run) and sent again in a later phase; the other
    sessions' steps are answered meanwhile; in the end every session is exact to Keras."""
    model, store = keras_model
    plane = build_dataplane(Settings(store=store, device="cpu", sessions=cluster.url, session_store_timeout=2.0))
    redis_store = plane.sessions.store
    assert isinstance(redis_store, RedisStateStore)
    sessions, most_steps = 8, 64
    xs = np.random.default_rng(4).standard_normal((sessions, 1, most_steps, F)).astype(np.float32)
    slot_of = [redis_store.client.keyslot(redis_store._bucket(f"lstm/s:moved-{k}")) for k in range(sessions)]
    got: list[list[np.ndarray]] = [[] for _ in range(sessions)]

    async def step_each() -> set[int]:
        """Sends every session's next step once; returns the sessions refused."""
        refused = set()
        for k in range(sessions):
            t = len(got[k])
            request = _step(xs[k][:, t : t + 1], f"moved-{k}", sequence_start=t == 0, sequence_step=t + 1)
            try:
                got[k].append((await plane.infer(request)).outputs[0].data)
            except StoreUnavailable:
                refused.add(k)
        return refused

    try:
        assert await step_each() == set()
        for slot in sorted(set(slot_of)):
            source = cluster.owner(slot)
            to = next(p for p in cluster.primaries() if p != source)
            cluster.begin_move(slot, to)
            await step_each()
            assert cluster.move_keys(slot, to, count=1) == 1
            moving = {k for k in range(sessions) if slot_of[k] == slot}
            assert await step_each() == moving, "a step meeting its slot half-moved is refused, the others are not"
            cluster.move_keys(slot, to)
            await step_each()
            cluster.end_move(slot, to)
            assert cluster.owner(slot) == to
            assert await step_each() == set()
        steps = [len(g) for g in got]
        print(f"{len(set(slot_of))} slots resharded; steps per session {steps}")
        for k in range(sessions):
            expected = model.predict(xs[k][:, : steps[k]], verbose=0)
            np.testing.assert_allclose(np.concatenate(got[k], axis=1), expected, atol=1e-5)
    finally:
        await plane.close()
