"""A real Redis Cluster on loopback: `primaries` redis-server processes in cluster mode, each with
`replicas` replicas, joined by `redis-cli --cluster create`."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from helpers.server import free_port


@dataclass
class Cluster:
    ports: list[int]
    processes: dict[int, subprocess.Popen[bytes]]

    @property
    def url(self) -> str:
        """The seqserve URL, naming two startup nodes (the client finds the others)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports[:2])

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def primaries(self) -> list[int]:
        """Ports of the nodes that are primaries now (a failover changes them)."""
        ports = []
        for line in self._nodes():
            fields = line.split()
            if "master" in fields[2] and "fail" not in fields[2] and fields[7] == "connected":
                ports.append(_port(fields[1]))
        return sorted(ports)

    def owner(self, slot: int) -> int:
        """Port of the primary serving `slot` now."""
        for line in self._nodes():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            for served in fields[8:]:
                if served.startswith("["):  # a slot being migrated or imported
                    continue
                first, _, last = served.partition("-")
                if int(first) <= slot <= int(last or first):
                    return _port(fields[1])
        raise LookupError(f"no primary serves slot {slot}")

    # Resharding one slot in the phases `redis-cli --cluster reshard` goes through, one call each,
    # so that a test can send requests in every phase.
    def begin_move(self, slot: int, to: int) -> None:
        """Marks `slot` importing on the primary at port `to` and migrating on its owner."""
        ids = self._ids()
        source = self.owner(slot)
        self.client(to).execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        self.client(source).execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[to])

    def move_keys(self, slot: int, to: int, count: int | None = None) -> int:
        """Moves `count` keys of a slot being migrated (all when None) to `to`; returns how many."""
        source, moved = self.owner(slot), 0
        while count is None or moved < count:
            batch = 16 if count is None else min(16, count - moved)
            keys = self.client(source).execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
            if not keys:
                break
            self.client(source).execute_command("MIGRATE", "127.0.0.1", to, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
        return moved

    def end_move(self, slot: int, to: int) -> None:
        """Announces `to` as the owner of `slot`: to itself, the old owner, then every other primary."""
        ids, source = self._ids(), self.owner(slot)
        for port in [to, source, *(p for p in self.primaries() if p not in (to, source))]:
            self.client(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[to])

    def _ids(self) -> dict[int, str]:
        return {_port(line.split()[1]): line.split()[0] for line in self._nodes()}

    def _nodes(self) -> list[str]:
        alive = [p for p in self.ports if self.processes[p].poll() is None]
        return self.client(alive[0]).execute_command("CLUSTER", "NODES").decode().splitlines()

    def kill(self, port: int) -> None:
        self.processes[port].send_signal(signal.SIGKILL)
        self.processes[port].wait(timeout=10)

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until every live node says cluster_state:ok and every slot has a primary."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = [
                    self.client(p).execute_command("CLUSTER", "INFO").decode()
                    for p in self.ports
                    if self.processes[p].poll() is None
                ]
                if all("cluster_state:ok" in s for s in states):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster did not become healthy")
            time.sleep(0.1)


@contextmanager
def running_cluster(directory: Path, primaries: int = 3, replicas: int = 1) -> Iterator[Cluster]:
    binary = shutil.which("redis-server")
    cli = shutil.which("redis-cli")
    if binary is None or cli is None:
        raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server; `make test` does it)")
    ports = [_low_free_port() for _ in range(primaries * (1 + replicas))]
    processes = {}
    try:
        for port in ports:
            node = directory / str(port)
            node.mkdir(parents=True)
            processes[port] = subprocess.Popen(
                [
                    binary,
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(node),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    # A dead primary is failed over within a couple of seconds.
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-replica-validity-factor",
                    "0",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],  # fmt: skip
                stdout=(node / "redis.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        cluster = Cluster(ports, processes)
        for port in ports:
            _wait_pong(cluster.client(port))
        addresses = [f"127.0.0.1:{port}" for port in ports]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", str(replicas), "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        cluster.wait_healthy()
        yield cluster
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            process.wait(timeout=10)


def _port(address: str) -> int:
    """The port of a CLUSTER NODES address, host:port@busport."""
    return int(address.split("@")[0].rsplit(":", 1)[1])


def _low_free_port() -> int:
    """A free port below 55536: a cluster node's bus port is its port + 10000."""
    while True:
        port = free_port()
        if port <= 55535:
            return port


def _wait_pong(client: redis.Redis) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
