"""darkroom/sentinel_cluster.py: a real Sentinel setup that fails over, twice, and
keeps what its replicas acknowledged."""

from __future__ import annotations

import socket

import pytest
import redis

from darkroom.sentinel_cluster import SentinelCluster
from tests.support.system import require_sentinel_redis

# A real Sentinel cluster fails over.
pytestmark = pytest.mark.slow

# Six consecutive ports: three servers, three sentinels.
BASE_PORT = 26400


def test_a_killed_master_is_replaced_then_a_forced_failover_moves_it_again() -> None:
    binary = require_sentinel_redis()
    # Sub-second: a dead master is replaced in about two seconds.
    with SentinelCluster(BASE_PORT, down_after_ms=800, binary=binary) as cluster:
        assert cluster.sentinels_setting == "127.0.0.1:26403,127.0.0.1:26404,127.0.0.1:26405"
        first = cluster.master_port()
        client(first).set("job", "kept")
        assert client(first).wait(2, 5000) == 2, "both replicas acknowledge"

        assert cluster.kill_master() == first
        second = cluster.wait_for_new_master(first)
        assert second != first
        assert cluster.redis_url(3) == f"redis://127.0.0.1:{second}/3"
        assert client(second).get("job") == "kept"

        cluster.restart(first)
        info = client(first).info("replication")
        assert (info["role"], info["master_port"], info["master_link_status"]) == (
            "slave",
            second,
            "up",
        )

        third = cluster.failover()
        assert third != second
        assert cluster.master_port() == third
        assert client(third).get("job") == "kept"

    for port in range(BASE_PORT, BASE_PORT + 6):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1)


def client(port: int) -> redis.Redis:
    return redis.Redis(port=port, decode_responses=True, socket_connect_timeout=1)
