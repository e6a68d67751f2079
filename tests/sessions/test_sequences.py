"""Sequences through the data plane: state carried like Keras `stateful=True`, safely, per session."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from helpers.onnx_models import run_directly, write_embedding_model, write_lstm_model
from seqserve.config import Settings
from seqserve.dataplane import DataPlane
from seqserve.errors import InvalidInput, LimitExceeded, ModelNotFound, SessionConflict, SessionNotFound
from seqserve.inference import InferRequest, Tensor
from seqserve.server import build_dataplane


@pytest.fixture()
def store(tmp_path: Path) -> Path:
    write_lstm_model(tmp_path, "lstm", 1, stateful=True)
    write_lstm_model(tmp_path, "plain", 1, stateful=False)
    write_embedding_model(tmp_path, "embed", 1)
    return tmp_path


@pytest.fixture(params=["memory", "redis"])
def sessions(request: pytest.FixtureRequest) -> str:
    """Every behaviour is pinned down on both state stores."""
    if request.param == "memory":
        return "memory"
    url = request.getfixturevalue("redis_url")
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushdb()
    return url


class Planes:
    """Data planes made by a test, closed at its end."""

    def __init__(self, store: Path, sessions: str) -> None:
        self.store, self.sessions, self.made = store, sessions, []

    def __call__(self, **settings: object) -> DataPlane:
        plane = build_dataplane(Settings(store=self.store, device="cpu", sessions=self.sessions, **settings))
        self.made.append(plane)
        return plane


@pytest.fixture()
async def make_plane(store: Path, sessions: str) -> AsyncIterator[Planes]:
    planes = Planes(store, sessions)
    yield planes
    for plane in planes.made:
        await plane.close()


@pytest.fixture()
def plane(make_plane: Planes) -> DataPlane:
    return make_plane()


def _seq(batch: int = 2, steps: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, steps, 3)).astype(np.float32)


def _step(x: np.ndarray, sequence_id: int | str, model: str = "lstm", **flags: object) -> InferRequest:
    return InferRequest(model, inputs=[Tensor("x", "FP32", x)], parameters={"sequence_id": sequence_id, **flags})


async def _stream(plane: DataPlane, x: np.ndarray, sequence_id: int | str, chunk: int) -> np.ndarray:
    """Sends `x` in chunks of `chunk` timesteps as one sequence; returns the `sequence` output, concatenated."""
    outputs = []
    for start in range(0, x.shape[1], chunk):
        flags = {"sequence_start": start == 0, "sequence_end": start + chunk >= x.shape[1]}
        response = await plane.infer(_step(x[:, start : start + chunk], sequence_id, **flags))
        outputs.append(response.outputs[1].data)
    return np.concatenate(outputs, axis=1)


@pytest.mark.parametrize("chunk", [1, 2, 4])
async def test_a_sequence_in_chunks_equals_the_whole_sequence_at_once(
    plane: DataPlane, store: Path, chunk: int
) -> None:
    x = _seq()
    streamed = await _stream(plane, x, 7, chunk)
    expected = run_directly(store / "lstm" / "1", {"x": x})["sequence"]
    np.testing.assert_allclose(streamed, expected, atol=1e-6)


async def test_interleaved_sessions_never_mix(plane: DataPlane, store: Path) -> None:
    xs = {sid: _seq(seed=i) for i, sid in enumerate([1, 2, "two", 2**64 - 1])}
    got: dict[object, list[np.ndarray]] = {sid: [] for sid in xs}
    for t in range(6):
        for sid, x in xs.items():
            response = await plane.infer(_step(x[:, t : t + 1], sid, sequence_start=t == 0))
            got[sid].append(response.outputs[1].data)
    for sid, x in xs.items():
        expected = run_directly(store / "lstm" / "1", {"x": x})["sequence"]
        np.testing.assert_allclose(np.concatenate(got[sid], axis=1), expected, atol=1e-6, err_msg=str(sid))


async def test_concurrent_steps_of_one_session_apply_one_at_a_time_in_arrival_order(
    plane: DataPlane, store: Path
) -> None:
    x = _seq(steps=8)
    await plane.infer(_step(x[:, :1], 5, sequence_start=True))
    responses = await asyncio.gather(*(plane.infer(_step(x[:, t : t + 1], 5)) for t in range(1, 8)))
    streamed = np.concatenate([r.outputs[1].data for r in responses], axis=1)
    expected = run_directly(store / "lstm" / "1", {"x": x})["sequence"][:, 1:]
    np.testing.assert_allclose(streamed, expected, atol=1e-6)


async def test_start_resets_the_state_of_a_running_sequence(plane: DataPlane, store: Path) -> None:
    x = _seq()
    await plane.infer(_step(x[:, :3], 1, sequence_start=True))
    again = await plane.infer(_step(x[:, :3], 1, sequence_start=True))
    expected = run_directly(store / "lstm" / "1", {"x": x[:, :3]})["sequence"]
    np.testing.assert_allclose(again.outputs[1].data, expected, atol=1e-6)


async def test_start_may_supply_the_initial_state(plane: DataPlane) -> None:
    x = _seq(steps=4)
    await plane.infer(_step(x[:, :2], 1, sequence_start=True))
    carried = (await plane.sessions.store.load("lstm/u:1")).states
    # Sequence 2 starts from sequence 1's state: it must continue exactly as sequence 1 does.
    seeded = await plane.infer(
        InferRequest(
            "lstm",
            inputs=[Tensor("x", "FP32", x[:, 2:])] + [Tensor(k, "FP32", v) for k, v in carried.items()],
            parameters={"sequence_id": 2, "sequence_start": True},
        )
    )
    continued = await plane.infer(_step(x[:, 2:], 1))
    np.testing.assert_array_equal(seeded.outputs[1].data, continued.outputs[1].data)
    with pytest.raises(InvalidInput, match=r"state 'lstm.h' has shape \[1, 4\], expected \[2, 4\]"):
        await plane.infer(
            InferRequest(
                "lstm",
                inputs=[Tensor("x", "FP32", x[:, 2:]), Tensor("lstm.h", "FP32", np.zeros((1, 4), np.float32))],
                parameters={"sequence_id": 3, "sequence_start": True},
            )
        )


async def test_a_step_without_start_for_an_unknown_sequence_says_it_needs_the_start_flag(plane: DataPlane) -> None:
    with pytest.raises(SessionNotFound, match="sequence 99 of model 'lstm' is unknown.*sequence_start=true"):
        await plane.infer(_step(_seq(steps=1), 99))


async def test_integer_and_string_ids_are_different_sequences(plane: DataPlane) -> None:
    await plane.infer(_step(_seq(steps=1), 42, sequence_start=True))
    with pytest.raises(SessionNotFound, match="sequence '42'"):
        await plane.infer(_step(_seq(steps=1), "42"))


async def test_end_frees_the_session(plane: DataPlane) -> None:
    await plane.infer(_step(_seq(steps=1), 1, sequence_start=True))
    await plane.infer(_step(_seq(steps=1), 1, sequence_end=True))
    assert await plane.sessions.store.count() == 0
    with pytest.raises(SessionNotFound, match="has ended"):
        await plane.infer(_step(_seq(steps=1), 1))


async def test_a_failed_request_leaves_the_state_unchanged(plane: DataPlane, store: Path) -> None:
    x = _seq()
    await plane.infer(_step(x[:, :2], 1, sequence_start=True))
    with pytest.raises(InvalidInput, match="batch size 2 .* this request has 1"):
        await plane.infer(_step(x[:1, 2:4], 1))
    bad = x[:, 2:4].copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InvalidInput, match="NaN"):
        await plane.infer(_step(bad, 1))
    with pytest.raises(InvalidInput, match="can only be given with sequence_start"):
        await plane.infer(
            InferRequest(
                "lstm",
                inputs=[Tensor("x", "FP32", x[:, 2:4]), Tensor("lstm.h", "FP32", np.zeros((2, 4), np.float32))],
                parameters={"sequence_id": 1},
            )
        )
    rest = await plane.infer(_step(x[:, 2:], 1))
    expected = run_directly(store / "lstm" / "1", {"x": x})["sequence"][:, 2:]
    np.testing.assert_allclose(rest.outputs[1].data, expected, atol=1e-6)


async def test_a_retried_step_returns_the_stored_answer_without_advancing(plane: DataPlane, store: Path) -> None:
    x = _seq(steps=3)
    await plane.infer(_step(x[:, :1], 1, sequence_start=True, sequence_step=1))
    second = await plane.infer(_step(x[:, 1:2], 1, sequence_step=2))
    retried = await plane.infer(_step(x[:, 1:2], 1, sequence_step=2))
    assert retried.parameters["sequence_step"] == 2
    np.testing.assert_array_equal(retried.outputs[1].data, second.outputs[1].data)
    third = await plane.infer(_step(x[:, 2:3], 1, sequence_step=3))
    expected = run_directly(store / "lstm" / "1", {"x": x})["sequence"][:, 2:3]
    np.testing.assert_allclose(third.outputs[1].data, expected, atol=1e-6)
    with pytest.raises(SessionConflict, match="is at step 3; step 5 cannot be applied"):
        await plane.infer(_step(x[:, 2:3], 1, sequence_step=5))
    with pytest.raises(SessionConflict, match="step 1 cannot be applied"):
        await plane.infer(_step(x[:, 2:3], 1, sequence_step=1))


async def test_a_used_step_number_with_other_inputs_is_a_conflict_not_the_stored_answer(
    plane: DataPlane, store: Path
) -> None:
    """Twelve clients sending step 2 with different inputs (fewer than max_pending_per_session): one
    is applied, the others are refused (they are not retries of it), and a true retry of it, same
    inputs, is still answered."""
    x = _seq(steps=2)
    others = np.random.default_rng(9).standard_normal((12, *x[:, 1:2].shape)).astype(np.float32)
    await plane.infer(_step(x[:, :1], 1, sequence_start=True, sequence_step=1))
    answers = await asyncio.gather(
        *(plane.infer(_step(other, 1, sequence_step=2)) for other in others), return_exceptions=True
    )
    applied = [k for k, a in enumerate(answers) if not isinstance(a, BaseException)]
    assert len(applied) == 1, answers
    for k, answer in enumerate(answers):
        if k not in applied:
            assert isinstance(answer, SessionConflict), answer
            assert "step 2 of sequence 1 was applied with other inputs" in str(answer)
    retried = await plane.infer(_step(others[applied[0]], 1, sequence_step=2))
    np.testing.assert_array_equal(retried.outputs[1].data, answers[applied[0]].outputs[1].data)  # type: ignore[union-attr]
    expected = run_directly(store / "lstm" / "1", {"x": np.concatenate([x[:, :1], others[applied[0]]], axis=1)})
    np.testing.assert_allclose(retried.outputs[1].data, expected["sequence"][:, 1:], atol=1e-6)


async def test_a_session_stays_on_the_version_it_started_on(plane: DataPlane, store: Path) -> None:
    x = _seq()
    await plane.infer(_step(x[:, :3], 1, sequence_start=True))
    write_lstm_model(store, "lstm", 2, seed=5, stateful=True)
    plane.store.scan()
    rest = await plane.infer(_step(x[:, 3:], 1))
    assert rest.model_version == "1"
    np.testing.assert_allclose(
        rest.outputs[1].data, run_directly(store / "lstm" / "1", {"x": x})["sequence"][:, 3:], atol=1e-6
    )
    new = await plane.infer(_step(x[:, :1], 2, sequence_start=True))
    assert new.model_version == "2"


async def test_an_idle_session_expires_and_says_so(make_plane: Planes) -> None:
    plane = make_plane(max_sequence_idle=0.05)
    await plane.infer(_step(_seq(steps=1), 1, sequence_start=True))
    await asyncio.sleep(0.15)
    with pytest.raises(SessionNotFound, match="expired after 0.05 s idle"):
        await plane.infer(_step(_seq(steps=1), 1))


async def test_the_least_recently_used_session_is_evicted_when_full_and_says_so(make_plane: Planes) -> None:
    plane = make_plane(max_sessions=2, session_eviction_grace=0)
    for sid in (1, 2, 3):
        await plane.infer(_step(_seq(steps=1), sid, sequence_start=True))
    with pytest.raises(SessionNotFound, match="sequence 1 of model 'lstm' was evicted"):
        await plane.infer(_step(_seq(steps=1), 1))
    await plane.infer(_step(_seq(steps=1), 3))
    assert await plane.sessions.store.count() == 2


async def test_a_flood_of_new_sessions_cannot_push_out_active_ones(make_plane: Planes) -> None:
    plane = make_plane(max_sessions=3, session_eviction_grace=60)
    for sid in (1, 2, 3):
        await plane.infer(_step(_seq(steps=1), sid, sequence_start=True))
    with pytest.raises(LimitExceeded, match="maximum of sessions"):
        await plane.infer(_step(_seq(steps=1), 4, sequence_start=True))
    for sid in (1, 2, 3):
        await plane.infer(_step(_seq(steps=1), sid))


async def test_a_streaming_session_keeps_its_place_and_the_quiet_one_is_evicted(make_plane: Planes) -> None:
    """Redis renews a streaming session's place in the LRU index lazily (at most every grace, or 1 s),
    never leaving it behind a session that has been quiet since before."""
    plane = make_plane(max_sessions=2, session_eviction_grace=0.2)
    for sid in (1, 2):
        await plane.infer(_step(_seq(steps=1), sid, sequence_start=True))
    streaming_until = time.monotonic() + 0.7
    while time.monotonic() < streaming_until:
        await plane.infer(_step(_seq(steps=1), 1))
        await asyncio.sleep(0.02)
    await plane.infer(_step(_seq(steps=1), 3, sequence_start=True))
    with pytest.raises(SessionNotFound, match="sequence 2 of model 'lstm' was evicted"):
        await plane.infer(_step(_seq(steps=1), 2))
    await plane.infer(_step(_seq(steps=1), 1))


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"sequence_id": 1}, "exported without state"),
        ({"sequence_start": True}, "need a non-zero 'sequence_id'"),
        ({"sequence_id": 1.5}, "unsigned integer or a string"),
        ({"sequence_id": -3}, "outside the uint64 range"),
        ({"sequence_id": 1, "sequence_start": "yes"}, "'sequence_start' must be a boolean"),
        ({"sequence_id": 1, "sequence_start": True, "sequence_step": 0}, "positive integer"),
    ],
)
async def test_malformed_sequence_requests_are_refused(plane: DataPlane, parameters: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        await plane.infer(InferRequest("plain", inputs=[Tensor("x", "FP32", _seq(steps=1))], parameters=parameters))


# -- the session API ---------------------------------------------------------------------------


async def test_a_created_session_has_an_unguessable_id_and_starts_from_zeros(plane: DataPlane, store: Path) -> None:
    info = await plane.session_api.create("lstm")
    assert len(info.session_id) == 32 and int(info.session_id, 16) >= 0
    assert (info.step, info.batch_size, info.states) == (0, 0, [])
    x = _seq()
    first = await plane.infer(_step(x[:, :2], info.session_id))
    rest = await plane.infer(_step(x[:, 2:], info.session_id))
    streamed = np.concatenate([first.outputs[1].data, rest.outputs[1].data], axis=1)
    np.testing.assert_allclose(streamed, run_directly(store / "lstm" / "1", {"x": x})["sequence"], atol=1e-6)
    assert (await plane.session_api.get("lstm", info.session_id)).step == 2


async def test_state_export_and_import_round_trip(plane: DataPlane) -> None:
    x = _seq()
    await plane.infer(_step(x[:, :3], 1, sequence_start=True))
    exported = (await plane.sessions.store.load("lstm/u:1")).states
    other = await plane.session_api.create("lstm")
    info = await plane.session_api.set_states(
        "lstm", other.session_id, [Tensor(k, "FP32", v) for k, v in exported.items()]
    )
    assert info.batch_size == 2 and {t.name for t in info.states} == {"lstm.h", "lstm.c"}
    read = await plane.session_api.get("lstm", other.session_id)
    for tensor in read.states:
        np.testing.assert_array_equal(tensor.data, exported[tensor.name])
    # The imported state continues exactly like the session it came from.
    a = await plane.infer(_step(x[:, 3:], 1))
    b = await plane.infer(_step(x[:, 3:], other.session_id))
    np.testing.assert_array_equal(a.outputs[1].data, b.outputs[1].data)


async def test_session_api_errors_name_the_problem_and_change_nothing(plane: DataPlane) -> None:
    info = await plane.session_api.create("lstm")
    zeros = np.zeros((2, 4), np.float32)
    with pytest.raises(InvalidInput, match="missing 'lstm.h'"):
        await plane.session_api.set_states("lstm", info.session_id, [Tensor("lstm.c", "FP32", zeros)])
    with pytest.raises(InvalidInput, match="unknown state 'gru.h'"):
        await plane.session_api.set_states("lstm", info.session_id, [Tensor("gru.h", "FP32", zeros)])
    with pytest.raises(InvalidInput, match=r"state 'lstm.c' has shape \[3, 4\], expected \[2, 4\]"):
        await plane.session_api.set_states(
            "lstm", info.session_id, [Tensor("lstm.h", "FP32", zeros), Tensor("lstm.c", "FP32", np.zeros((3, 4)))]
        )
    assert (await plane.session_api.get("lstm", info.session_id)).states == []
    with pytest.raises(InvalidInput, match="exported without state"):
        await plane.session_api.create("plain")
    # A session belongs to its model: the same id under another model is another, unknown, session.
    with pytest.raises(SessionNotFound, match="of model 'embed' is unknown"):
        await plane.session_api.get("embed", info.session_id)
    await plane.session_api.end("lstm", info.session_id)
    with pytest.raises(SessionNotFound, match="has ended"):
        await plane.session_api.end("lstm", info.session_id)


async def test_a_retried_numbered_last_step_gets_its_answer_again(plane: DataPlane) -> None:
    x = _seq(steps=2)
    await plane.infer(_step(x[:, :1], 1, sequence_start=True, sequence_step=1))
    last = await plane.infer(_step(x[:, 1:], 1, sequence_end=True, sequence_step=2))
    retried = await plane.infer(_step(x[:, 1:], 1, sequence_end=True, sequence_step=2))
    np.testing.assert_array_equal(retried.outputs[1].data, last.outputs[1].data)
    for request in (_step(x[:, 1:], 1, sequence_step=3), _step(x[:, 1:], 1)):
        with pytest.raises(SessionNotFound, match="sequence 1 of model 'lstm' has ended"):
            await plane.infer(request)
    with pytest.raises(SessionNotFound, match="has ended"):
        await plane.session_api.get("lstm", 1)
    # The id can start a new sequence.
    await plane.infer(_step(x[:, :1], 1, sequence_start=True, sequence_step=1))


async def test_a_version_removed_from_disk_keeps_serving_its_sessions_until_they_end(
    make_plane: Planes, store: Path
) -> None:
    plane = make_plane(max_sequence_idle=30)
    x = _seq()
    await plane.infer(_step(x[:, :2], 1, sequence_start=True))
    write_lstm_model(store, "lstm", 2, seed=5, stateful=True)
    shutil.rmtree(store / "lstm" / "1")
    plane.store.scan()
    # New requests see only version 2; the session started on version 1 finishes there.
    assert (await plane.infer(_step(x[:, :1], 2, sequence_start=True))).model_version == "2"
    with pytest.raises(ModelNotFound, match="has no version 1"):
        await plane.infer(InferRequest("lstm", model_version="1", inputs=[Tensor("x", "FP32", x[:, :1])]))
    rest = await plane.infer(_step(x[:, 2:], 1))
    assert rest.model_version == "1"


async def test_a_session_whose_version_is_gone_says_so(make_plane: Planes, store: Path) -> None:
    plane = make_plane(max_sequence_idle=0)  # no grace period
    await plane.infer(_step(_seq(steps=1), 1, sequence_start=True))
    write_lstm_model(store, "lstm", 2, seed=5, stateful=True)
    shutil.rmtree(store / "lstm" / "1")
    plane.store.scan()
    with pytest.raises(ModelNotFound, match="version 1 of model 'lstm', which this session runs on, was removed"):
        await plane.infer(_step(_seq(steps=1), 1))


# -- per-model limits from config.yaml ----------------------------------------------------------


async def test_a_models_config_bounds_its_own_sessions_and_idle_time(make_plane: Planes, store: Path) -> None:
    write_lstm_model(store, "other", 1, stateful=True)
    (store / "lstm" / "config.yaml").write_text("max_sessions: 2\nmax_sequence_idle: 0.2\n")
    plane = make_plane(session_eviction_grace=0)
    await plane.infer(_step(_seq(steps=1), 1, model="other", sequence_start=True))
    for sid in (1, 2, 3):
        await plane.infer(_step(_seq(steps=1), sid, sequence_start=True))
    with pytest.raises(SessionNotFound, match="sequence 1 of model 'lstm' was evicted"):
        await plane.infer(_step(_seq(steps=1), 1))
    # The other model's session was not touched by lstm's bound, and keeps the server's idle time.
    await plane.infer(_step(_seq(steps=1), 1, model="other"))
    await asyncio.sleep(0.4)
    with pytest.raises(SessionNotFound, match="expired after 0.2 s idle"):
        await plane.infer(_step(_seq(steps=1), 2))
    await plane.infer(_step(_seq(steps=1), 1, model="other"))


async def test_session_counts_are_scraped_from_either_store(make_plane: Planes) -> None:
    plane = make_plane(max_sessions=1, session_eviction_grace=0)
    await plane.infer(_step(_seq(steps=1), 1, sequence_start=True))
    await plane.infer(_step(_seq(steps=1), 2, sequence_start=True))
    # Redis' counts are read by the periodic sweep (a scrape never waits on Redis); the memory
    # store's are its own.
    await plane.sessions.store.sweep()
    text = plane.metrics.exposition().decode()
    assert "seqserve_sessions_active 1.0" in text
    assert "seqserve_session_evictions_total 1.0" in text


async def test_too_many_requests_queued_on_one_session_are_refused_and_change_nothing(
    make_plane: Planes, store: Path
) -> None:
    # Runs on a thread, so the steps overlap (on the event loop, a lone stream's step finishes at once).
    plane = make_plane(max_pending_per_session=2, inline_max_elements=0, batch_compute="thread")
    x = _seq(steps=5)
    await plane.infer(_step(x[:, :1], 1, sequence_start=True))
    outcomes = await asyncio.gather(
        *(plane.infer(_step(x[:, t : t + 1], 1, sequence_step=t + 1)) for t in range(1, 5)), return_exceptions=True
    )
    refused = [o for o in outcomes if isinstance(o, SessionConflict)]
    assert refused and all("requests in flight" in str(o) for o in refused)
    applied = [o for o in outcomes if not isinstance(o, Exception)]
    # What was applied is a prefix of the sequence, in order; the refused steps left no trace.
    assert (await plane.session_api.get("lstm", 1)).step == 1 + len(applied)
    expected = run_directly(store / "lstm" / "1", {"x": x})["sequence"]
    for t, response in enumerate(applied, start=1):
        np.testing.assert_allclose(response.outputs[1].data, expected[:, t : t + 1], atol=1e-6)
