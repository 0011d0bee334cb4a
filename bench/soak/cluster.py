"""The chaos row's Redis: where its Sentinel cluster runs, and what its broker still holds."""

from __future__ import annotations

import base64
import contextlib
import re
import socket

import redis

from bench.stack import BenchError
from darkroom.sentinel_cluster import sentinel_binary as cluster_binary

# The soak runs darkroom's SentinelCluster (darkroom/sentinel_cluster.py), the one
# the tests run: the tested way to run a master, two replicas and three sentinels on
# loopback (their config files, sentinel clocks scaled for sub-second failovers,
# the "settled" checks after a failover or a restart).

# Six consecutive ports (three servers, three sentinels), below the ephemeral range
# that free_port() (the Stack's Redis and servers) draws from, and clear of the
# tests' 26700.
CLUSTER_PORTS = 6
PORT_SEARCH = range(27600, 32000, 10)


def sentinel_binary() -> str:
    """A redis-server of 7.0 or newer (darkroom/sentinel_cluster.py), or BenchError."""
    found = cluster_binary()
    if found is None:
        raise BenchError("the chaos row needs redis-server 7.0 or newer on PATH")
    return found


def cluster_base_port() -> int:
    """The first of CLUSTER_PORTS consecutive free ports in PORT_SEARCH."""
    for base in PORT_SEARCH:
        if all(_free(base + i) for i in range(CLUSTER_PORTS)):
            return base
    raise BenchError(f"no {CLUSTER_PORTS} consecutive free ports in {PORT_SEARCH}")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def broker_messages(client: redis.Redis, ids: list[str]) -> dict[str, list[str]]:
    """Where the broker (`client`: the master) still holds a Celery message for each
    of `ids`: the queue lists' names, or "unacked" (delivered, waiting for its ack or
    the visibility timeout). Reads every list: for the few jobs a soak lost."""
    found: dict[str, list[str]] = {job_id: [] for job_id in ids}
    if not ids:
        return found
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"list":
            payloads = client.lrange(key, 0, -1)
        elif kind == b"hash" and key == b"unacked":
            payloads = client.hvals(key)
        else:
            continue
        for payload in payloads:
            text = _message_text(payload)
            for job_id in ids:
                if job_id in text:
                    found[job_id].append(key.decode(errors="replace"))
    return found


def _message_text(payload: bytes | str) -> str:
    """A kombu message (or unacked entry) with its base64 task bodies decoded."""
    text = payload if isinstance(payload, str) else payload.decode(errors="replace")
    bodies = re.findall(r'"body": ?"([A-Za-z0-9+/=]+)"', text)
    decoded = []
    for body in bodies:
        with contextlib.suppress(ValueError):
            decoded.append(base64.b64decode(body).decode(errors="replace"))
    return text + "".join(decoded)
