"""Connecting to the session store's Redis: one server, or a Redis Cluster (Valkey speaks the same).

    redis://host:port/db          rediss://... (TLS)         unix:///path/to/socket?db=0
    redis+cluster://host:port[,host:port...]                  rediss+cluster://... (TLS)

A cluster URL lists startup nodes; the client learns the rest of the cluster from them, and
follows MOVED and ASK redirections (failover, resharding) by itself.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from seqserve.errors import InvalidInput

CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = ("redis", "rediss", "unix", *CLUSTER_SCHEMES)


def is_cluster(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def connect(url: str, timeout: float) -> Any:
    """An asyncio client for `url` whose every call gives up after `timeout` seconds."""
    scheme = url.split("://", 1)[0]
    if scheme not in SCHEMES:
        raise InvalidInput(f"session store URL {url!r}: expected one of {', '.join(s + '://' for s in SCHEMES)}")
    if scheme not in CLUSTER_SCHEMES:
        return aioredis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    parts = urlsplit(url)
    nodes = []
    for address in parts.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise InvalidInput(f"session store URL {url!r}: cluster nodes are host:port, not {address!r}")
        nodes.append(ClusterNode(host, int(port)))
    return RedisCluster(
        startup_nodes=nodes,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        ssl=scheme.startswith("rediss"),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
