"""A worker's claim and terminal status survive Redis failing for a while (a failover)."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import redis

from shared.errors import InvalidTransition, NotReplicated
from shared.jobs import JobRecord, JobStatus
from shared.store import JobStore
from tests.shared.test_store import make_record
from worker import failover

# Redis is stopped and started again.
pytestmark = pytest.mark.slow


class FlakyStore(JobStore):
    """A JobStore on fakeredis whose next transitions fail as a failover makes them fail:
    `lost_replies` are written but answered with a lost connection; `refused` not written."""

    def __init__(self) -> None:
        self.events: list[tuple[str, JobStatus]] = []
        super().__init__(fakeredis.FakeRedis(), 3600, on_event=self._heard)
        self.lost_replies = 0
        self.refused = 0
        self.not_replicated = 0

    def _heard(self, _: JobStore, record: JobRecord, event: str) -> None:
        self.events.append((event, record.status))

    def transition(self, job_id: str, target: JobStatus, **fields: Any) -> JobRecord:
        if self.refused:
            self.refused -= 1
            raise redis.ConnectionError("Connection refused (no master yet)")
        if self.not_replicated:
            self.not_replicated -= 1
            record = super().transition(job_id, target, **fields)
            raise NotReplicated(f"job {record.id}: 0 of the 1 replicas confirmed it")
        record = super().transition(job_id, target, **fields)
        if self.lost_replies:
            self.lost_replies -= 1
            raise redis.ConnectionError("Connection reset by peer")
        return record


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


def running_job(store: FlakyStore, worker: str = "w-1") -> JobRecord:
    record = make_record()
    store.create(record)
    return store.transition(record.id, JobStatus.RUNNING, worker=worker)


def test_a_success_whose_reply_was_lost_is_not_written_twice(store: FlakyStore) -> None:
    record = running_job(store)
    store.events.clear()
    store.lost_replies = 1

    finished = failover.transition(store, record.id, JobStatus.SUCCEEDED, progress=1.0)

    assert finished.status is JobStatus.SUCCEEDED
    assert store.get(record.id).status is JobStatus.SUCCEEDED
    # The event is told once more: the first attempt may have died before telling it.
    assert store.events == [("completed", JobStatus.SUCCEEDED)] * 2


def test_refused_writes_are_retried_until_redis_answers(store: FlakyStore) -> None:
    record = running_job(store)
    store.refused = 3

    failed = failover.transition(store, record.id, JobStatus.FAILED)

    assert failed.status is JobStatus.FAILED
    assert store.refused == 0


def test_a_write_too_few_replicas_confirmed_is_confirmed_again(store: FlakyStore) -> None:
    record = running_job(store)
    store.not_replicated = 1
    assert failover.transition(store, record.id, JobStatus.SUCCEEDED).status is (
        JobStatus.SUCCEEDED
    )


def test_another_workers_claim_is_not_taken_for_ours(store: FlakyStore) -> None:
    record = make_record()
    store.create(record)
    store.lost_replies = 1
    store.transition = _claimed_by_other_first(store)  # type: ignore[method-assign]

    with pytest.raises(InvalidTransition):
        failover.transition(store, record.id, JobStatus.RUNNING, worker="w-1")


def _claimed_by_other_first(store: FlakyStore) -> Any:
    original = store.transition

    def transition(job_id: str, target: JobStatus, **fields: Any) -> JobRecord:
        if store.lost_replies:
            store.lost_replies -= 1
            JobStore.transition(store, job_id, target, worker="w-2")
            raise redis.ConnectionError("Connection reset by peer")
        return original(job_id, target, **fields)

    return transition


def test_it_gives_up_after_the_window(store: FlakyStore) -> None:
    record = running_job(store)
    store.refused = 1000
    with pytest.raises(redis.ConnectionError):
        failover.transition(store, record.id, JobStatus.SUCCEEDED, window_s=0.3)
    assert store.get(record.id).status is JobStatus.RUNNING
