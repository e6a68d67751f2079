"""Soak: 1,000 sessions churning against a real seqserve server for a set time, with a memory probe.

A `seqserve serve` process (and, with `--sessions redis`, a redis-server of its own) serves a small
stateful LSTM written into a temporary store, with a short idle timeout and a session bound below
the number of sessions the clients keep open (the model's config.yaml), so that in one run sessions
are created (`sequence_start`, and the session API's CreateSession), stepped, ended (`sequence_end`,
EndSession), left to expire, and evicted (least recently used, when a new one needs the room).

Each of `--clients` (1,000) client slots loops: open a session, step it a few times, then either end
it (and sometimes step it once more, which must be refused), go silent past the idle timeout (the
next step must be refused), or pause long enough to be evictable and carry on. Requests are gRPC
ModelInfer calls assembled from bytes serialized before the run (one process, one event loop: a
load generator on 2 cores must be cheap). Every answer is checked against ONNX Runtime run on the
same file in this process, step by step, and classified:

- success (the output must match the oracle);
- an expected refusal: 404 / NOT_FOUND for a session that ended, expired or was evicted, when the
  timing allows it, and 429 / RESOURCE_EXHAUSTED for a new session while no session is evictable;
- anything else is unexpected: other codes (INTERNAL, UNAVAILABLE, ...), timeouts, wrong outputs, a
  session that answers after it ended or after its idle timeout, one that expired early or was
  evicted while in use. "Early" is judged by bounds the client can prove: the server's idle time at
  its check lies between (this send - previous answer) and (this answer - previous send).

The server's resident memory (VmRSS in /proc/<pid>/status) is sampled every second. Pass: zero
unexpected answers, each kind of churn seen, the server's log free of errors, and RSS flat after
warm-up (the first 20% of the run): the median of the last quarter of the remaining samples within
5% of the median of their first quarter. After the load stops the script waits for every session to
expire and reads the server's count of live sessions (memory store: must be 0).

    .venv/bin/python bench/soak.py --seconds 600                    # the 10-minute soak, memory store
    .venv/bin/python bench/soak.py --seconds 600 --sessions redis   # the same with a redis-server
Writes bench/results/soak.{json,md,png} (soak-redis.* with Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]  # the tests' model writer and redis-server launcher

import grpc  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402
from serving import report, servers  # noqa: E402
from serving.stats import cpu_seconds  # noqa: E402

from seqserve.grpc.generated import grpc_service_pb2 as pb  # noqa: E402
from seqserve.grpc.generated import session_service_pb2 as spb  # noqa: E402

MODEL = "soak"
INFER = "/inference.GRPCInferenceService/ModelInfer"
CREATE = "/seqserve.SessionService/CreateSession"
END = "/seqserve.SessionService/EndSession"
PATTERNS, MAX_STEPS = 16, 32  # input sequences the sessions replay; steps one session takes at most
TOLERANCE = 1e-4  # batched runs may differ from the oracle's batch-1 runs in the last bits
WARMUP_FRACTION, DRIFT_LIMIT = 0.2, 0.05


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the model and its oracle ----------------------------------------------------------------------


def build_store(work: Path, features: int, units: int, idle: float, max_sessions: int) -> Path:
    """A stateful LSTM (the exporter's layout, tests/helpers) with its config.yaml; returns its version dir."""
    from helpers.onnx_models import write_lstm_model

    store = work / "store"
    version_dir = write_lstm_model(store, MODEL, stateful=True, features=features, units=units, seed=13)
    config = {"max_sequence_idle": idle, "max_sessions": max_sessions}
    (store / MODEL / "config.yaml").write_text(yaml.safe_dump(config))
    return version_dir


@dataclass
class Oracle:
    """Inputs of each pattern and what the model answers at each step of it (ORT, batch 1, states fed back)."""

    inputs: np.ndarray  # [pattern, step, features]
    outputs: np.ndarray  # [pattern, step, units]: output `last` after that step

    @classmethod
    def compute(cls, version_dir: Path, features: int, units: int) -> Oracle:
        import onnxruntime as ort

        session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
        inputs = np.random.default_rng(0).standard_normal((PATTERNS, MAX_STEPS, features), dtype=np.float32)
        outputs = np.zeros((PATTERNS, MAX_STEPS, units), np.float32)
        for p in range(PATTERNS):
            h = c = np.zeros((1, units), np.float32)
            for t in range(MAX_STEPS):
                feeds = {"x": inputs[p, t][None, None], "state_in.lstm.h": h, "state_in.lstm.c": c}
                last, h, c = session.run(["last", "state_out.lstm.h", "state_out.lstm.c"], feeds)
                outputs[p, t] = last[0]
        return cls(inputs, outputs)

    def requests(self) -> dict[tuple[int, int, str], bytes]:
        """ModelInfer requests without their sequence id, serialized once: (pattern, step, flag) -> bytes.

        The id is appended per session as a second serialized message: protobuf merges concatenated
        messages, map entries included."""
        out = {}
        for p in range(PATTERNS):
            for t in range(MAX_STEPS):
                for flag in ("", "sequence_start", "sequence_end"):
                    request = pb.ModelInferRequest(model_name=MODEL)
                    request.inputs.add(name="x", datatype="FP32", shape=[1, 1, self.inputs.shape[2]])
                    request.raw_input_contents.append(self.inputs[p, t].tobytes())
                    request.outputs.add(name="last")
                    if flag:
                        request.parameters[flag].bool_param = True
                    out[p, t, flag] = request.SerializeToString()
        return out


def sequence_id_bytes(sequence_id: int | str) -> bytes:
    request = pb.ModelInferRequest()
    if isinstance(sequence_id, int):
        request.parameters["sequence_id"].int64_param = sequence_id
    else:
        request.parameters["sequence_id"].string_param = sequence_id
    return request.SerializeToString()


# -- what happened -------------------------------------------------------------------------------


@dataclass
class Tally:
    """Every answer, classified. `churn` counts what the clients did; `refusals` and `unexpected` by kind."""

    steps: int = 0
    churn: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def fault(self, kind: str, detail: str) -> None:
        self.unexpected[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail[:300]}")


def gone_reason(details: str) -> str:
    """Why the server says a session is gone, from its NOT_FOUND text (seqserve.sessions.stores)."""
    for needle, reason in (("has ended", "ended"), ("expired", "expired"), ("evicted", "evicted")):
        if needle in details:
            return reason
    return "unknown"


@dataclass
class Session:
    sequence_id: int | str
    id_bytes: bytes
    pattern: int
    via_api: bool
    step: int = 0  # steps applied
    ended: bool = False
    last_sent: float = 0.0  # of the last request the server answered
    last_answered: float = 0.0


# -- the clients -----------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace, target: str, oracle: Oracle) -> None:
        self.args, self.oracle = args, oracle
        self.requests = oracle.requests()
        self.tally = Tally()
        self.stopping = asyncio.Event()
        self.in_flight = asyncio.Semaphore(args.in_flight)
        self.next_id = 1
        self.started = time.monotonic()
        self.channel = grpc.aio.insecure_channel(target)
        self.infer = self.channel.unary_unary(INFER, request_serializer=None, response_deserializer=None)
        self.create = self.channel.unary_unary(
            CREATE, request_serializer=spb.CreateSessionRequest.SerializeToString,
            response_deserializer=spb.Session.FromString,
        )  # fmt: skip
        self.end = self.channel.unary_unary(
            END, request_serializer=spb.EndSessionRequest.SerializeToString,
            response_deserializer=spb.EndSessionResponse.FromString,
        )  # fmt: skip

    async def pause(self, seconds: float) -> bool:
        """Sleeps; False when the soak has stopped meanwhile (clients are cancelled then anyway)."""
        await asyncio.sleep(seconds)
        return not self.stopping.is_set()

    def resting(self, client: int) -> bool:
        """Whether this client opens no session now. The load comes in waves: in the first half of
        each wave every client is busy and the sessions outnumber the bound (evictions, 429s); in
        the second half only `calm_share` of them are, so that idle sessions are left to expire."""
        a = self.args
        calm = (time.monotonic() - self.started) % a.wave >= a.wave / 2
        return calm and client >= a.calm_share * a.clients

    async def client(self, index: int, rng: random.Random) -> None:
        """One client slot: sessions one after another until the soak stops."""
        a = self.args
        while await self.pause(rng.uniform(0, a.think_max)):
            if self.resting(index):
                continue
            session = await self.open(rng)
            if session is None:
                await self.pause(rng.uniform(0.5, 1.5))  # full: back off
                continue
            if not await self.burst(session, rng, rng.randint(2, 12)):
                continue
            fate = rng.random()
            if fate < 0.4:  # end it; sometimes knock again
                await self.finish(session)
                if rng.random() < 0.25 and await self.pause(rng.uniform(0, 0.5)):
                    self.tally.churn["ended then stepped"] += 1
                    await self.step(session)
            elif fate < 0.7:  # leave it to expire, then knock
                self.tally.churn["left to expire"] += 1
                if await self.pause(a.idle + rng.uniform(0.3, 1.5)):
                    await self.step(session)
            else:  # idle long enough to be evictable, then carry on if still there
                self.tally.churn["paused"] += 1
                rested = await self.pause(rng.uniform(a.eviction_grace + 0.2, 0.8 * a.idle))
                if rested and await self.burst(session, rng, rng.randint(1, 12)):
                    await self.finish(session)

    async def open(self, rng: random.Random) -> Session | None:
        pattern, via_api = rng.randrange(PATTERNS), rng.random() < self.args.api_fraction
        async with self.in_flight:
            sent = time.monotonic()
            try:
                if via_api:
                    made = await self.create(spb.CreateSessionRequest(model_name=MODEL), timeout=self.args.timeout)
                    session = Session(made.session_id, sequence_id_bytes(made.session_id), pattern, True)
                else:
                    sequence_id, self.next_id = self.next_id, self.next_id + 1
                    session = Session(sequence_id, sequence_id_bytes(sequence_id), pattern, False)
                    await self._infer(session, "sequence_start")
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    self.tally.refusals["429 full (new session)"] += 1
                else:
                    self.tally.fault(f"{e.code().name} on a new session", e.details() or "")
                return None
            except _WrongOutput as e:
                self.tally.fault("wrong output", str(e))
                return None
        session.last_sent, session.last_answered = sent, time.monotonic()
        self.tally.churn["created (session API)" if via_api else "created (sequence_start)"] += 1
        return session

    async def burst(self, session: Session, rng: random.Random, steps: int) -> bool:
        """Steps the session `steps` times, a think time apart; False once it is gone or the soak stops."""
        for _ in range(steps):
            if session.step >= MAX_STEPS - 2 or not await self.pause(
                rng.uniform(self.args.think_min, self.args.think_max)
            ):
                return not self.stopping.is_set()
            if not await self.step(session):
                return False
        return True

    async def finish(self, session: Session) -> None:
        """Ends the session: EndSession for one made by the API, else a last step with sequence_end."""
        if session.via_api:
            async with self.in_flight:
                try:
                    await self.end(spb.EndSessionRequest(model_name=MODEL, session_id=str(session.sequence_id)),
                                   timeout=self.args.timeout)  # fmt: skip
                except grpc.aio.AioRpcError as e:
                    self._classify_error(session, e)
                    return
            session.ended = True
            self.tally.churn["ended (EndSession)"] += 1
        elif await self.step(session, "sequence_end"):
            session.ended = True
            self.tally.churn["ended (sequence_end)"] += 1

    async def step(self, session: Session, flag: str = "") -> bool:
        """One step; True when it was applied. Judges the answer against what the session's timing allows."""
        async with self.in_flight:
            sent = time.monotonic()
            idle_at_least = sent - session.last_answered
            try:
                await self._infer(session, flag)
            except grpc.aio.AioRpcError as e:
                self._classify_error(session, e)
                return False
            except _WrongOutput as e:
                self.tally.fault("wrong output", str(e))
                return False
            answered = time.monotonic()
        if session.ended:
            self.tally.fault("answered after its end", f"sequence {session.sequence_id}")
        elif idle_at_least > self.args.idle + 0.05:
            self.tally.fault("outlived its idle timeout", f"sequence {session.sequence_id}: {idle_at_least:.2f} s idle")
        session.last_sent, session.last_answered = sent, answered
        return True

    async def _infer(self, session: Session, flag: str) -> None:
        p, t = session.pattern, session.step
        answer = await self.infer(self.requests[p, t, flag] + session.id_bytes, timeout=self.args.timeout)
        got = np.frombuffer(pb.ModelInferResponse.FromString(answer).raw_output_contents[0], np.float32)
        expected = self.oracle.outputs[p, t]
        if got.shape != expected.shape or not np.allclose(got, expected, atol=TOLERANCE, rtol=0):
            raise _WrongOutput(
                f"sequence {session.sequence_id} step {t + 1}: got {got[:3]}..., expected {expected[:3]}..."
            )
        session.step += 1
        self.tally.steps += 1

    def _classify_error(self, session: Session, e: grpc.aio.AioRpcError) -> None:
        code, details = e.code(), e.details() or ""
        idle_at_most = time.monotonic() - session.last_sent  # the server's idle time at its check is below this
        if code == grpc.StatusCode.NOT_FOUND:
            reason = gone_reason(details)
            allowed = {
                "ended": session.ended,
                "expired": idle_at_most >= self.args.idle,
                "evicted": idle_at_most >= self.args.eviction_grace,
            }.get(reason, False)
            if allowed:
                self.tally.refusals[f"404 {reason}"] += 1
            else:
                what = {"ended": "said ended, was not", "expired": "expired early", "evicted": "evicted while in use"}
                self.tally.fault(what.get(reason, "unknown session"), f"{details} (idle at most {idle_at_most:.2f} s)")
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            self.tally.fault("timeout", f"sequence {session.sequence_id}: no answer in {self.args.timeout} s")
        else:
            self.tally.fault(code.name, details)


class _WrongOutput(Exception):
    pass


# -- the probe -------------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc/<pid>/status (VmRSS, kB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def probe(
    soak: Soak, pid: int, started: float, timeline: list[dict[str, float]], every: float, redis_url: str | None
) -> None:
    """Samples the server's RSS and CPU and the counts (and Redis's memory and keys), every `every`
    seconds, until cancelled."""
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_url) if redis_url else None
    try:
        while True:
            tally = soak.tally
            sample = {
                "t": round(time.monotonic() - started, 2), "rss_mib": round(rss_mib(pid), 2),
                "cpu_s": round(cpu_seconds(pid), 2), "steps": tally.steps,
                "refusals": sum(tally.refusals.values()), "unexpected": sum(tally.unexpected.values()),
            }  # fmt: skip
            if client is not None:
                sample["redis_mib"] = round((await client.info("memory"))["used_memory"] / 2**20, 2)
                sample["redis_keys"] = await client.dbsize()
            timeline.append(sample)
            await asyncio.sleep(every)
    finally:
        if client is not None:
            await client.aclose()


def redis_census(url: str) -> dict[str, int]:
    """What the Redis store holds, by kind of key (seqserve.sessions.redis_store names them
    <prefix>s:<session>, <prefix>t:<session>, <prefix>lru, <prefix>lru:<model>, <prefix>evictions)."""
    import redis

    client = redis.Redis.from_url(url)
    census: Counter[str] = Counter()
    try:
        for key in client.scan_iter(count=1000):
            name = key.decode(errors="replace")
            if "lru" in name.rsplit("}", 1)[-1]:
                census[f"entries of {'the server' if name.endswith('lru') else 'the model'}'s LRU index"] += int(
                    client.zcard(key)
                )
            elif "t:" in name:
                census["tombstones"] += 1
            elif "s:" in name:
                census["session records"] += 1
        census["used_memory bytes"] = int(client.info("memory")["used_memory"])
    finally:
        client.close()
    return dict(census)


def progress_line(timeline: list[dict[str, float]], tally: Tally, seconds: float) -> str:
    now, before = timeline[-1], timeline[max(0, len(timeline) - 6)]
    rate = (now["steps"] - before["steps"]) / max(now["t"] - before["t"], 1e-9)
    refusals = ", ".join(f"{k} {v:,}" for k, v in sorted(tally.refusals.items())) or "none"
    unexpected = ", ".join(f"{k} {v:,}" for k, v in sorted(tally.unexpected.items())) or "0"
    return (f"{now['t']:6.0f}/{seconds:.0f} s  steps {now['steps']:,} ({rate:,.0f}/s)  refusals: {refusals}  "
            f"unexpected: {unexpected}  server RSS {now['rss_mib']:.1f} MiB")  # fmt: skip


def rss_drift(timeline: list[dict[str, float]], seconds: float) -> dict[str, Any]:
    """RSS after warm-up (the first 20% of the run): the median of the last quarter of the remaining
    samples against the median of their first quarter."""
    warmup = WARMUP_FRACTION * seconds
    after = [s["rss_mib"] for s in timeline if warmup <= s["t"] <= seconds]
    if len(after) < 4:
        return {"warmup_s": warmup, "samples": len(after), "drift": None}
    quarter = len(after) // 4
    first, last = statistics.median(after[:quarter]), statistics.median(after[-quarter:])
    return {
        "warmup_s": warmup,
        "samples": len(after),
        "first_quarter_median_mib": first,
        "last_quarter_median_mib": last,
        "drift": (last - first) / first,
        "max_mib": max(after),
    }


# -- the run ---------------------------------------------------------------------------------------


def scrape(url: str) -> dict[str, float]:
    """seqserve's session gauges and counters from /metrics."""
    import httpx

    wanted = ("seqserve_sessions_active", "seqserve_session_evictions_total", "seqserve_session_expiries_total")
    values: dict[str, float] = {}
    for line in httpx.get(url, timeout=10).text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            values[name] = values.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return values


def code_version() -> str:
    """The commit served, and whether the server's code differed from it (others edit the tree meanwhile)."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "service")
    return f"{git('rev-parse', '--short', 'HEAD')}{' + uncommitted changes in service/' if changed else ''}"


def server_log_errors(path: Path) -> list[str]:
    lines = path.read_text(errors="replace").splitlines()
    return [line for line in lines if "Traceback" in line or " ERROR " in line or line.startswith("ERROR")]


@contextlib.contextmanager
def session_store(kind: str, work: Path) -> Iterator[str]:
    if kind == "memory":
        yield "memory"
        return
    from helpers.redis_server import running_redis

    (work / "redis").mkdir()
    with running_redis(work / "redis") as url:
        yield url


async def drive(
    args: argparse.Namespace, server: servers.ServerProcess, oracle: Oracle, redis_url: str | None
) -> dict[str, Any]:
    assert server.grpc_target is not None and server.metrics_url is not None
    soak = Soak(args, server.grpc_target, oracle)
    timeline: list[dict[str, float]] = []
    started = time.monotonic()
    probing = asyncio.create_task(probe(soak, server.pid, started, timeline, args.probe_every, redis_url))
    soak.started = started
    clients = [asyncio.create_task(soak.client(i, random.Random(i))) for i in range(args.clients)]
    try:
        next_line = started + args.progress_every
        while (now := time.monotonic()) < started + args.seconds:
            await asyncio.sleep(min(next_line, started + args.seconds) - now)
            if time.monotonic() >= next_line and timeline:
                log(progress_line(timeline, soak.tally, args.seconds))
                next_line += args.progress_every
        soak.stopping.set()
        for task in clients:  # a client ends only by cancellation: one that is done has crashed
            if task.done() and task.exception() is not None:
                soak.tally.fault("client crashed", repr(task.exception()))
        at_stop = scrape(server.metrics_url)
        log(f"load stopped; waiting {args.drain:.0f} s for every session to expire")
        await asyncio.sleep(args.drain)
    finally:
        probing.cancel()
        for task in clients:
            task.cancel()
        await soak.channel.close()
    drained = scrape(server.metrics_url)
    census = redis_census(redis_url) if redis_url else None
    return {"tally": soak.tally, "timeline": timeline, "at_stop": at_stop, "drained": drained,
            "rss_drained_mib": rss_mib(server.pid), "redis": census}  # fmt: skip


def verdict(args: argparse.Namespace, results: dict[str, Any]) -> list[report.Target]:
    churn, refusals, drift = results["churn"], results["refusals"], results["rss"]["drift"]
    created = churn.get("created (sequence_start)", 0) + churn.get("created (session API)", 0)
    ended = churn.get("ended (sequence_end)", 0) + churn.get("ended (EndSession)", 0)
    unexpected = sum(results["unexpected"].values())
    checks = [
        report.Target("unexpected answers", f"{unexpected:,}", "0", unexpected == 0),
        report.Target("sessions created / ended", f"{created:,} / {ended:,}", "> 0 each", created > 0 and ended > 0),
        report.Target("refused as expired / evicted / ended (404)",
                      f"{refusals.get('404 expired', 0):,} / {refusals.get('404 evicted', 0):,} / "
                      f"{refusals.get('404 ended', 0):,}",
                      "> 0 each", all(refusals.get(f"404 {k}", 0) > 0 for k in ("expired", "evicted", "ended"))),
        report.Target("errors in the server's log", str(len(results["server_log_errors"])), "0",
                      not results["server_log_errors"]),
    ]  # fmt: skip
    if drift is not None:
        checks.append(report.Target("server RSS after warm-up, last vs first quarter (median)", f"{100 * drift:+.1f}%",
                                    f"within {100 * DRIFT_LIMIT:.0f}%", abs(drift) <= DRIFT_LIMIT))  # fmt: skip
    if args.sessions == "memory":
        left = results["server_after_drain"].get("seqserve_sessions_active")
        checks.append(report.Target("sessions held once all have expired", f"{left:g}" if left is not None else "?",
                                    "0", left == 0))  # fmt: skip
    return checks


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="how long the clients churn")
    parser.add_argument("--sessions", choices=["memory", "redis"], default="memory", help="the server's session store")
    parser.add_argument("--clients", type=int, default=1000, help="client slots, each holding at most one session")
    parser.add_argument("--max-sessions", type=int, default=600, help="the model's session bound (config.yaml)")
    parser.add_argument("--idle", type=float, default=3.0, help="the model's max_sequence_idle, s (config.yaml)")
    parser.add_argument("--eviction-grace", type=float, default=1.0, help="SEQSERVE_SESSION_EVICTION_GRACE, s")
    parser.add_argument("--think-min", type=float, default=0.2, help="seconds between a session's steps, at least")
    parser.add_argument("--think-max", type=float, default=1.0, help="... at most")
    parser.add_argument("--wave", type=float, default=20.0, help="seconds of one wave of load: busy, then calm")
    parser.add_argument("--calm-share", type=float, default=0.3, help="share of the clients busy in a calm half-wave")
    parser.add_argument("--api-fraction", type=float, default=0.2, help="share of sessions made by CreateSession")
    parser.add_argument("--in-flight", type=int, default=64, help="requests in flight at most")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of every request, s")
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--probe-every", type=float, default=1.0)
    parser.add_argument("--progress-every", type=float, default=5.0)
    parser.add_argument("--drain", type=float, default=None,
                        help="seconds to wait after the load for sessions to expire (default: idle + 12)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--stem", default=None, help="file names (default: soak, soak-redis)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.drain is None:  # the memory store sweeps every 10 s when the server-wide idle timeout is long
        args.drain = args.idle + 12.0
    stem = args.stem or ("soak" if args.sessions == "memory" else f"soak-{args.sessions}")
    started, code = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), code_version()
    with tempfile.TemporaryDirectory(prefix="seqserve-soak-") as tmp:
        work = Path(tmp)
        version_dir = build_store(work, args.features, args.units, args.idle, args.max_sessions)
        oracle = Oracle.compute(version_dir, args.features, args.units)
        with session_store(args.sessions, work) as url:
            settings = {"sessions": url, "session_eviction_grace": str(args.eviction_grace)}
            with servers.seqserve(version_dir.parent.parent, work, "soak", settings) as server:
                log(
                    f"seqserve (pid {server.pid}, sessions: {args.sessions}) up; {args.clients} clients for "
                    f"{args.seconds:g} s, at most {args.max_sessions} sessions, idle timeout {args.idle:g} s"
                )
                run = asyncio.run(drive(args, server, oracle, None if url == "memory" else url))
                log_errors = server_log_errors(server.log_path)
    tally: Tally = run["tally"]
    results: dict[str, Any] = {
        "started": started,
        "machine": report.machine(),
        "code": code,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "model": f"LSTM {args.features}->{args.units} (hand-built ONNX, tests/helpers), one timestep per request",
        "steps": tally.steps,
        "churn": dict(tally.churn),
        "refusals": dict(tally.refusals),
        "unexpected": dict(tally.unexpected),
        "unexpected_examples": tally.examples,
        "server_at_stop": run["at_stop"],
        "server_after_drain": run["drained"],
        "rss": {
            **rss_drift(run["timeline"], args.seconds),
            "start_mib": run["timeline"][0]["rss_mib"],
            "end_mib": run["timeline"][-1]["rss_mib"],
            "after_drain_mib": run["rss_drained_mib"],
        },  # fmt: skip
        "redis_after_drain": run["redis"],
        "server_log_errors": log_errors[:20],
        "timeline": run["timeline"],
    }
    checks = verdict(args, results)
    results["targets"] = [c.__dict__ for c in checks]
    results["passed"] = all(c.passed for c in checks)
    for c in checks:
        log(f"{'PASS' if c.passed else 'FAIL'}  {c.name}: {c.measured} (wanted {c.wanted})")
    for example in tally.examples:
        log(f"  unexpected: {example}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(markdown(results, f"{stem}.png"))
    plot(results, args.out / f"{stem}.png")
    log(f"wrote {args.out / stem}.{{json,md,png}}")
    return 0 if results["passed"] else 1


# -- the report ------------------------------------------------------------------------------------


def markdown(results: dict[str, Any], png_name: str) -> str:
    s, rss = results["settings"], results["rss"]
    seconds = s["seconds"]
    timeline = results["timeline"]
    cpu = (timeline[-1]["cpu_s"] - timeline[0]["cpu_s"]) / max(timeline[-1]["t"] - timeline[0]["t"], 1e-9)
    lines = [
        f"# Soak: {s['clients']:,} clients churning sessions for {seconds:g} s, {s['sessions']} store "
        f"({results['started']}, code {results['code']})", "",
        f"{results['model']}; the model's config.yaml: max_sessions {s['max_sessions']}, max_sequence_idle "
        f"{s['idle']:g} s; eviction grace {s['eviction_grace']:g} s; think time {s['think_min']:g}-"
        f"{s['think_max']:g} s; load in waves of {s['wave']:g} s (busy, then {100 * s['calm_share']:.0f}% of the "
        f"clients); {100 * s['api_fraction']:.0f}% of sessions made by CreateSession; at most {s['in_flight']} "
        "requests in flight.",
        "", f"**{'PASS' if results['passed'] else 'FAIL'}**", "",
        "| check | measured | wanted | |", "|---|---|---|---|",
        *(f"| {t['name']} | {t['measured']} | {t['wanted']} | {'PASS' if t['passed'] else 'FAIL'} |"
          for t in results["targets"]),
        "", f"Steps answered: {results['steps']:,} ({results['steps'] / seconds:,.0f}/s); server CPU "
        f"{cpu:.2f} cores.", "",
        "| what the clients did | count |", "|---|---:|",
        *(f"| {k} | {v:,} |" for k, v in sorted(results["churn"].items())),
        "", "| expected refusals | count |", "|---|---:|",
        *(f"| {k} | {v:,} |" for k, v in sorted(results["refusals"].items())),
        "", "| unexpected | count |", "|---|---:|",
        *(f"| {k} | {v:,} |" for k, v in sorted(results["unexpected"].items())),
        *([] if results["unexpected"] else ["| none | 0 |"]),
        "", "| server | at the end of the load | after every session expired |", "|---|---:|---:|",
        *(f"| {k} | {results['server_at_stop'].get(k, float('nan')):,.0f} | "
          f"{results['server_after_drain'].get(k, float('nan')):,.0f} |"
          for k in sorted(set(results["server_at_stop"]) | set(results["server_after_drain"]))),
        "", f"Server RSS: {rss['start_mib']:.1f} MiB at start; after warm-up ({rss['warmup_s']:.0f} s) first-quarter "
        f"median {rss.get('first_quarter_median_mib', float('nan')):.1f} MiB, last-quarter median "
        f"{rss.get('last_quarter_median_mib', float('nan')):.1f} MiB "
        f"(drift {100 * (rss['drift'] or 0):+.2f}%), max {rss.get('max_mib', float('nan')):.1f} MiB; "
        f"{rss['end_mib']:.1f} MiB at the end, {rss['after_drain_mib']:.1f} MiB once every session expired.",
        "", f"![soak]({png_name})", "",
    ]  # fmt: skip
    if results.get("redis_after_drain"):
        first = next(s for s in timeline if "redis_mib" in s)
        lines[-3:-3] = [
            f"Redis: used_memory {first['redis_mib']:.1f} MiB and {first['redis_keys']:,} keys at start, "
            f"{timeline[-1]['redis_mib']:.1f} MiB and {timeline[-1]['redis_keys']:,} keys once every session "
            "expired; what it holds then: "
            + ", ".join(f"{k} {v:,}" for k, v in results["redis_after_drain"].items())
            + ".",
            "",
        ]
    if results["unexpected_examples"]:
        lines += ["First unexpected answers:", "", *(f"- `{e}`" for e in results["unexpected_examples"]), ""]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline, rss = results["timeline"], results["rss"]
    t = np.array([s["t"] for s in timeline])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    top.plot(t, [s["rss_mib"] for s in timeline], lw=1.2, label="server RSS")
    top.axvspan(0, rss["warmup_s"], color="0.9", label=f"warm-up (first {100 * WARMUP_FRACTION:.0f}%)")
    for key, label, style in (("first_quarter_median_mib", "first quarter median", "--"),
                              ("last_quarter_median_mib", "last quarter median", ":")):  # fmt: skip
        if key in rss:
            top.axhline(rss[key], color="0.3", ls=style, lw=1, label=f"{label} {rss[key]:.1f} MiB")
    if "redis_mib" in timeline[0]:  # on its own scale: it grows by design (tombstones live an hour)
        right = top.twinx()
        right.plot(t, [s["redis_mib"] for s in timeline], lw=1.2, color="tab:orange")
        right.set_ylabel("redis-server used_memory, MiB", color="tab:orange")
    for ax in (top, bottom):
        ax.axvline(results["settings"]["seconds"], color="0.5", lw=1)
    top.set_ylabel("MiB")
    top.legend(fontsize=8, loc="lower right")
    top.set_title("server resident memory (VmRSS)", fontsize=10)

    def rate(key: str) -> np.ndarray:
        values = np.array([s[key] for s in timeline], float)
        return np.diff(values) / np.maximum(np.diff(t), 1e-9)

    bottom.plot(t[1:], rate("steps"), lw=1, label="steps/s")
    bottom.plot(t[1:], rate("refusals"), lw=1, label="expected refusals/s")
    if any(s["unexpected"] for s in timeline):
        bottom.plot(t[1:], rate("unexpected"), lw=1.5, color="red", label="unexpected/s")
    bottom.set_xlabel("seconds (the load stops at the grey line; then every session is left to expire)")
    bottom.legend(fontsize=8, loc="lower right")
    bottom.set_title("answers per second", fontsize=10)
    s = results["settings"]
    fig.suptitle(f"seqserve soak: {s['clients']:,} clients, {s['sessions']} store, {s['seconds']:g} s "
                 f"({'PASS' if results['passed'] else 'FAIL'})")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def replot(json_path: Path) -> None:
    """Writes the .md and .png of a run again from its .json (after a change of the report)."""
    results = json.loads(json_path.read_text())
    json_path.with_suffix(".md").write_text(markdown(results, json_path.with_suffix(".png").name))
    plot(results, json_path.with_suffix(".png"))


if __name__ == "__main__":
    sys.exit(main())
