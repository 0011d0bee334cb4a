"""Redis Sentinel: the API and two workers ride through their master's death.

A real master, two replicas and three sentinels (darkroom/sentinel_cluster.py);
REDIS_URL names a port nothing listens on, so every part must find the master
through the sentinels. A client submits a job every 100 ms; the master is
SIGKILLed mid-stream and a replica promoted. Every 202 must end `succeeded`
(REDIS_MIN_REPLICAS_ACK=1: a 202 means a replica holds the job), the only
refusals are 503s, and the same processes accept jobs again, without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from kombu.exceptions import OperationalError

from darkroom.sentinel_cluster import SentinelCluster
from darkroom.stack import free_port
from shared.connections import (
    master_check,
    multiplexed_client,
    redis_client,
)
from shared.queue import make_celery
from shared.settings import Settings
from tests.conftest import S3_BUCKET
from tests.support.polling import wait_until
from tests.support.processes import ApiProcess, WorkerProcess, start_api, start_worker
from tests.support.system import require_sentinel_redis

BASE_PORT = 26700
SUBMIT_EVERY_S = 0.1
# The bound: jobs are accepted again within this long of the master's death.
RECOVERY_BOUND_S = 30
BODY = {"model": "tiny-sd", "width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def cluster() -> Iterator[SentinelCluster]:
    binary = require_sentinel_redis()
    with SentinelCluster(BASE_PORT, binary=binary) as started:
        yield started


@pytest.fixture(scope="module")
def ha_env(cluster: SentinelCluster, registry_file: Path, s3_endpoint: str) -> dict[str, str]:
    return {
        # Nothing listens here: only the sentinels can say where the master is.
        "REDIS_URL": "redis://127.0.0.1:1/2",
        "REDIS_SENTINELS": cluster.sentinels_setting,
        "REDIS_SENTINEL_MASTER": cluster.master_name,
        "REDIS_MIN_REPLICAS_ACK": "1",
        "REDIS_ACK_TIMEOUT_S": "1",
        "MODEL_CONFIG": str(registry_file),
        "STORAGE_URL": f"s3://{S3_BUCKET}/sentinel",
        "S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "RATE_LIMIT_SUBMITS_PER_MINUTE": "0",
        "RATE_LIMIT_MAX_QUEUED": "0",
    }


@pytest.fixture(scope="module")
def ha_stack(
    cluster: SentinelCluster, ha_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ApiProcess, list[WorkerProcess]]]:
    logs = tmp_path_factory.mktemp("sentinel-logs")
    workers: list[WorkerProcess] = []
    api = None
    try:
        for index in range(2):
            env = {**ha_env, "WORKER_MODEL": "tiny-sd"}
            workers.append(start_worker(f"ha-{index}@test", env, logs, cluster.redis_url(2)))
        api = start_api(ha_env, logs / "api.log", free_port())
        yield api, workers
    finally:
        if api is not None:
            api.stop()
        for worker in workers:
            worker.stop(signal.SIGTERM)


@dataclass
class Submitter:
    """POSTs a job every SUBMIT_EVERY_S on a thread of its own; what each answer was."""

    api_url: str
    accepted: list[str] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    # (monotonic time, status) of every answer, in order.
    answers: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with httpx.Client(base_url=self.api_url, timeout=20) as http:
            index = 0
            while not self._stop.is_set():
                index += 1
                answer = http.post("/jobs", json={**BODY, "prompt": f"lighthouse {index}"})
                self.answers.append((time.monotonic(), answer.status_code))
                if answer.status_code == 202:
                    self.accepted.append(answer.json()["id"])
                else:
                    self.refused.append((answer.status_code, answer.text))
                self._stop.wait(SUBMIT_EVERY_S)

    def accepted_after(self, moment: float) -> bool:
        return any(at > moment and status == 202 for at, status in self.answers)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def test_after_a_forced_failover_every_client_finds_the_new_master(
    cluster: SentinelCluster, ha_env: dict[str, str]
) -> None:
    """The demoted master drops its clients (or answers READONLY): each kind of
    connection darkroom makes (sync, the multiplexed one, Celery's broker) writes
    to the promoted replica afterwards, without being rebuilt.

    A write sent just as the failover happens may land on the old master and
    vanish when it resyncs (REDIS_MIN_REPLICAS_ACK is what guards against
    that): each client writes until its key is on the new master.
    """
    settings = Settings(_env_file=None, **{k.lower(): v for k, v in ha_env.items()})  # type: ignore[arg-type]
    sync_client = redis_client(settings)
    celery = make_celery(settings)

    def on_master(key: str) -> bool:
        return bool(redis.Redis.from_url(cluster.redis_url(2)).exists(key))

    async def lands(key: str, write: Callable[[], Awaitable[object]]) -> None:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(redis.ConnectionError):
                await write()
                if on_master(key):
                    return
            assert time.monotonic() < deadline, f"{key} never reached the new master"
            await asyncio.sleep(0.2)

    async def through_failover() -> None:
        mux = multiplexed_client(settings)
        try:
            await mux.execute("SET", "ha:mux", "before")
            sync_client.set("ha:sync", "before")
            with celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)
            old = cluster.master_port()
            assert await asyncio.to_thread(cluster.failover) != old
            await lands("ha:mux:after", lambda: mux.execute("SET", "ha:mux:after", "1"))
        finally:
            await mux.aclose()

    asyncio.run(through_failover())

    def sync_lands() -> bool:
        with contextlib.suppress(redis.ConnectionError):
            sync_client.set("ha:sync:after", "1")
        return on_master("ha:sync:after")

    wait_until(sync_lands, 30, 0.2, "the sync client's write on the new master")

    def broker_lands() -> bool:
        with contextlib.suppress(OperationalError, redis.ConnectionError):
            celery.send_task("darkroom.test.noop", queue="ha-check", retry=False)
        return bool(redis.Redis.from_url(cluster.redis_url(2)).llen("ha-check"))

    wait_until(broker_lands, 30, 0.2, "a Celery message on the new master")
    # A confirmed write counts only on the master the sentinels stand behind.
    check = master_check(settings)
    assert check is not None
    master = cluster.master_port()
    wait_until(lambda: check(("127.0.0.1", master)) is None, 30, 0.2, "sentinels settled")
    assert "name 127.0.0.1:" in str(check(("127.0.0.1", master + 1)))
    redis.Redis.from_url(cluster.redis_url(2)).delete("ha-check")


def test_a_master_killed_mid_stream_loses_no_accepted_job(
    cluster: SentinelCluster, ha_stack: tuple[ApiProcess, list[WorkerProcess]]
) -> None:
    api, workers = ha_stack
    submitter = Submitter(api.url)
    try:
        wait_until(
            lambda: len(submitter.accepted) >= 20, 60, what="20 jobs accepted before the kill"
        )
        old_master = cluster.kill_master()
        killed_at = time.monotonic()
        before_kill = len(submitter.accepted)
        new_master = cluster.wait_for_new_master(old_master, timeout_s=RECOVERY_BOUND_S)
        assert new_master != old_master
        wait_until(
            lambda: submitter.accepted_after(killed_at),
            RECOVERY_BOUND_S - (time.monotonic() - killed_at),
            what="a job accepted after the failover",
        )
        # A few more seconds of jobs on the new master.
        count = len(submitter.accepted)
        wait_until(lambda: len(submitter.accepted) >= count + 20, 60, what="20 more accepted")
    finally:
        submitter.stop()

    first_again = min(at for at, code in submitter.answers if at > killed_at and code == 202)
    print(
        f"\nsentinel failover: {len(submitter.accepted)} accepted, {len(submitter.refused)} "
        f"refused; accepted again {first_again - killed_at:.1f} s after the kill"
    )
    statuses = {code for code, _ in submitter.refused}
    assert statuses <= {503}, submitter.refused[:5]
    assert all(w.proc.poll() is None for w in workers), "a worker exited"
    assert api.proc.poll() is None, "the API exited"

    with httpx.Client(base_url=api.url, timeout=20) as http:

        def unfinished() -> list[str]:
            left = []
            for job_id in submitter.accepted:
                job = http.get(f"/jobs/{job_id}").json()
                if job["status"] != "succeeded":
                    left.append(f"{job_id}: {job['status']}")
            return left

        wait_until(lambda: not unfinished(), 180, 1.0, "every accepted job succeeded")
        # Both workers took jobs after the failover: each reconnected by itself.
        # All the jobs accepted after the kill: the last few alone may all fall to
        # the worker that reconnected first, on a busy machine.
        after_kill = submitter.accepted[before_kill:]
        workers_used = {http.get(f"/jobs/{i}").json()["worker"] for i in after_kill}
    assert len(workers_used) == 2, workers_used
