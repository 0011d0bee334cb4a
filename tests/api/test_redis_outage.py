"""Redis goes away and comes back: 503s in between, then the same API recovers by itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from darkroom.processes import Child
from darkroom.stack import free_port, redis_server_binary
from shared.settings import Settings
from tests.support.processes import start_redis_server

BODY = {"prompt": "a lighthouse", "model": "tiny-sd"}


class OwnRedis:
    """A redis-server this test starts, stops and restarts on the same port."""

    def __init__(self, binary: str, directory: Path):
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.server: Child | None = None

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no"]
        self.server = start_redis_server(
            [*command, "--dir", str(self.directory)],
            self.directory / "redis.log",
            redis.Redis.from_url(self.url, socket_connect_timeout=0.5),
            append=True,
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout_s=10)
            self.server = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server binary to start")
    server = OwnRedis(binary, tmp_path)
    server.start()
    yield server
    server.stop()


def assert_unavailable(response: object) -> None:
    assert response.status_code == 503, response.text  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["type"] == "service_unavailable"
    assert "unreachable" in error["message"]


def test_redis_outage_is_503_then_recovers_without_a_restart(
    own_redis: OwnRedis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis_url=own_redis.url)
    with TestClient(create_app(settings)) as client:
        before = client.post("/jobs", json=BODY)
        assert before.status_code == 202

        own_redis.stop()
        # A request that hung instead would fail the test at pytest's timeout.
        for _ in range(3):  # not just the first request on a dead connection
            assert_unavailable(client.post("/jobs", json=BODY))
        assert_unavailable(client.post("/jobs", json=BODY, headers={"Idempotency-Key": "k"}))
        assert_unavailable(client.get("/jobs/x"))
        assert_unavailable(client.get(f"/jobs/{before.json()['id']}"))
        assert_unavailable(client.get("/jobs"))
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["redis"].startswith("unreachable")
        assert client.get("/healthz").status_code == 200

        own_redis.start()  # same port, empty: nothing survived (no persistence here)
        after = client.post("/jobs", json=BODY)
        assert after.status_code == 202, after.text
        assert client.get(f"/jobs/{after.json()['id']}").status_code == 200
        assert client.get("/readyz").status_code == 200
        # The request refused during the outage did not burn its Idempotency-Key.
        keyed = client.post("/jobs", json=BODY, headers={"Idempotency-Key": "k"})
        assert keyed.status_code == 202
        assert "Idempotent-Replayed" not in keyed.headers

    # Only the accepted jobs exist: nothing was stored while Redis was away.
    restarted = redis.Redis.from_url(own_redis.url)
    jobs = {key.decode() for key in restarted.scan_iter("darkroom:job:*")}
    assert jobs == {f"darkroom:job:{after.json()['id']}", f"darkroom:job:{keyed.json()['id']}"}
