"""Jobs a worker holds, prepared to run next (shared/held.py): a dead holder's job gets a
new message at once; a live holder's is left alone, even by the orphan sweep. On a
real Redis with Celery's own publishing."""

from __future__ import annotations

from collections.abc import Callable

import redis
from celery import Celery

from shared.held import held_jobs, hold
from shared.jobs import JobStatus
from shared.queue import make_celery
from shared.reaper import reap_lost_jobs
from shared.settings import Settings
from shared.store import JobStore
from shared.workers import WorkerInfo, write_worker
from tests.shared.test_orphans import QUEUE, messages, queued


def _store_and_celery(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> tuple[JobStore, Celery]:
    settings = make_settings()
    return JobStore(api_redis, settings.job_ttl_s), make_celery(settings)


def test_the_job_a_dead_worker_held_gets_a_new_message_at_once(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    store, celery = _store_and_celery(make_settings, api_redis)
    job = queued(store, age_s=1)  # too young for the orphan sweep: only the hold tells
    hold(api_redis, job.id, "gone@host")  # no record: that worker is dead

    assert reap_lost_jobs(store, celery, max_attempts=3, queues=[QUEUE]) == [job.id]
    assert messages(api_redis, QUEUE) == [job.id]
    assert held_jobs(api_redis) == {}
    assert store.get(job.id).status is JobStatus.QUEUED


def test_a_live_workers_held_job_is_left_alone_however_long_it_waits(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    store, celery = _store_and_celery(make_settings, api_redis)
    write_worker(api_redis, WorkerInfo(name="alive@host", state="busy"), ttl_s=60)
    job = queued(store, age_s=600)  # old, and no message in the broker lists
    hold(api_redis, job.id, "alive@host")

    assert reap_lost_jobs(store, celery, max_attempts=3, queues=[QUEUE]) == []
    assert messages(api_redis, QUEUE) == []
    assert held_jobs(api_redis) == {job.id: "alive@host"}


def test_a_held_job_that_is_no_longer_queued_is_only_let_go(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    store, celery = _store_and_celery(make_settings, api_redis)
    job = queued(store, age_s=1)
    store.transition(job.id, JobStatus.CANCELED)
    hold(api_redis, job.id, "gone@host")

    assert reap_lost_jobs(store, celery, max_attempts=3, queues=[QUEUE]) == []
    assert messages(api_redis, QUEUE) == []
    assert held_jobs(api_redis) == {}
