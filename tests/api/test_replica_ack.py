"""REDIS_MIN_REPLICAS_ACK against a Redis with no replicas: every submission is
refused with a 503 and leaves nothing behind. (tests/e2e/test_sentinel.py runs
it with replicas that confirm.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api import enqueue
from api.main import create_app
from shared.cancel import cancel_requested
from shared.connections import multiplexed_client
from shared.constants import model_queue
from shared.errors import NotReplicated
from shared.jobs import JobStatus
from shared.multiplexed import LuaScript
from shared.replica_acks import ReplicaAck
from shared.settings import Settings
from shared.store import JobStore
from tests.api.test_jobs_api import queue_length
from tests.api.test_rate_limits import KEY_A, bearer
from tests.shared.test_store import make_record

BODY = {"prompt": "a lighthouse", "model": "tiny-sd"}


@pytest.fixture
def acked(make_settings: Callable[..., Settings], api_redis: redis.Redis) -> Iterator[TestClient]:
    settings = make_settings(
        api_keys=KEY_A,
        rate_limit_submits_per_minute=100,
        rate_limit_max_queued=100,
        redis_min_replicas_ack=1,
        redis_ack_timeout_s=0.05,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_a_submission_no_replica_confirms_is_503_and_leaves_nothing(
    acked: TestClient, api_redis: redis.Redis
) -> None:
    before = set(api_redis.keys())
    answer = acked.post("/jobs", json=BODY, headers=bearer(KEY_A, **{"Idempotency-Key": "k-1"}))

    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["type"] == "not_replicated"
    assert "REDIS_MIN_REPLICAS_ACK" in error["message"]
    assert "not accepted" in error["message"]
    # No record, index entry, waiting-set entry, message, Idempotency-Key or rate entry.
    assert queue_length(api_redis, model_queue("tiny-sd")) == 0
    left = {k for k in set(api_redis.keys()) - before if api_redis.type(k) != b"none"}
    # The key's scheduler settings (weight, max_running) are the key's, not the job's.
    left = {k for k in left if k not in (b"darkroom:sched:weight", b"darkroom:sched:cap")}
    assert not [k for k in left if api_redis.type(k) == b"hash" or b"idempotency" in k], left
    assert all(api_redis.zcard(k) == 0 for k in left if api_redis.type(k) == b"zset"), left
    assert acked.get("/jobs", headers=bearer(KEY_A)).json()["jobs"] == []
    # The same Idempotency-Key is not a replay of a job that was never accepted.
    again = acked.post("/jobs", json=BODY, headers=bearer(KEY_A, **{"Idempotency-Key": "k-1"}))
    assert again.status_code == 503


def test_without_replica_ack_the_same_redis_accepts(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    with TestClient(create_app(make_settings())) as client:
        assert client.post("/jobs", json=BODY).status_code == 202


class ClaimedInBetween:
    """The submission's connection, with a worker claiming the job between the
    script and the WAIT that then falls short."""

    def __init__(self, settings: Settings, store: JobStore, job_id: str) -> None:
        self.inner = multiplexed_client(settings)
        self.store = store
        self.job_id = job_id

    async def run_script_then(
        self, script: LuaScript, keys: list[Any], args: list[Any], *command: Any
    ) -> tuple[Any, Any]:
        replies = await self.inner.run_script_then(script, keys, args, *command)
        self.store.transition(self.job_id, JobStatus.RUNNING, worker="w-1")
        return replies

    async def run_script(self, script: LuaScript, keys: list[Any], args: list[Any]) -> Any:
        return await self.inner.run_script(script, keys, args)


def test_a_job_a_worker_took_before_the_refusal_is_canceled_not_removed(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    settings = make_settings()
    store = JobStore(api_redis, settings.job_ttl_s)
    record = make_record()
    call = enqueue.submit_call(record, None, None, settings, None)

    async def submit() -> None:
        connection = ClaimedInBetween(settings, store, record.id)
        try:
            with pytest.raises(NotReplicated, match="being canceled"):
                await enqueue.run(connection, call, ReplicaAck(1, 0.05))  # type: ignore[arg-type]
        finally:
            await connection.inner.aclose()

    asyncio.run(submit())
    claimed = store.get(record.id)
    assert claimed.status is JobStatus.RUNNING
    assert claimed.cancel_requested
    assert cancel_requested(api_redis, record.id)


def test_confirm_raises_when_too_few_replicas_answer(api_redis: redis.Redis) -> None:
    with pytest.raises(NotReplicated, match="0 of the 2"):
        ReplicaAck(2, 0.02).confirm(api_redis, "a test write")


def test_a_write_the_sentinels_do_not_stand_behind_is_not_confirmed(
    api_redis: redis.Redis,
) -> None:
    """A failover under way: the old master still takes writes, and a replica not yet
    moved still confirms them (WAIT 0 stands in for it here); both drop them later."""
    kwargs = api_redis.connection_pool.connection_kwargs
    here = (str(kwargs["host"]), int(kwargs["port"]))
    asked: list[tuple[str, int]] = []

    def behind(server: tuple[str, int]) -> str | None:
        asked.append(server)
        return None

    ReplicaAck(0, 0.05, master_check=behind).confirm(api_redis, "a status change")
    assert asked == [here]  # the server the mark and the WAIT went to
    with pytest.raises(NotReplicated, match="failover is under way"):
        ReplicaAck(0, 0.05, master_check=lambda _: "a Sentinel failover is under way").confirm(
            api_redis, "x"
        )


def test_a_submission_a_master_being_failed_over_took_is_taken_back(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    settings = make_settings()
    record = make_record()
    call = enqueue.submit_call(record, None, None, settings, None)

    async def failing_over(_: tuple[str, int]) -> str | None:
        return "a Sentinel failover is under way"

    async def submit() -> None:
        connection = multiplexed_client(settings)
        try:
            with pytest.raises(NotReplicated, match=r"failover is under way.*not accepted"):
                await enqueue.run(connection, call, ReplicaAck(0, 0.05), failing_over)
        finally:
            await connection.aclose()

    asyncio.run(submit())
    assert JobStore(api_redis, 60).get_or_none(record.id) is None
    assert queue_length(api_redis, record.queue) == 0
