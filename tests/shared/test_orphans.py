"""Queued jobs whose message a dying worker took get a new one (shared/orphans.py), on a
real Redis with Celery's own publishing."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta

import redis

from shared.constants import broker_lists, model_queue
from shared.jobs import JobRecord, JobStatus, utcnow
from shared.orphans import requeue_orphans
from shared.queue import make_celery, publish_job
from shared.settings import Settings
from shared.store import JobStore
from tests.shared.test_store import make_record

QUEUE = model_queue("tiny-sd")


def messages(client: redis.Redis, queue: str) -> list[str]:
    """The job ids in `queue`'s broker lists."""
    ids = []
    for name in broker_lists(queue):
        for raw in client.lrange(name, 0, -1):
            body = json.loads(base64.b64decode(json.loads(raw)["body"]))
            ids.append(body[0][0])
    return ids


def queued(store: JobStore, age_s: float, queue: str = QUEUE) -> JobRecord:
    record = make_record(queue=queue, created_at=utcnow() - timedelta(seconds=age_s))
    store.create(record)
    return record


def test_an_old_queued_job_with_no_message_gets_one(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    settings = make_settings()
    store, celery = JobStore(api_redis, settings.job_ttl_s), make_celery(settings)
    orphan = queued(store, age_s=120)
    fresh = queued(store, age_s=1)  # its message may be in a worker's hands this instant
    claimed = queued(store, age_s=120)
    store.transition(claimed.id, JobStatus.RUNNING, worker="w-1")

    assert requeue_orphans(store, celery, [QUEUE]) == [orphan.id]
    assert messages(api_redis, QUEUE) == [orphan.id]
    # The queue has a message now: nothing more until it is taken.
    assert requeue_orphans(store, celery, [QUEUE]) == []
    assert store.get(fresh.id).status is JobStatus.QUEUED


def test_a_queue_with_messages_waiting_is_left_alone(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    settings = make_settings()
    store, celery = JobStore(api_redis, settings.job_ttl_s), make_celery(settings)
    first, second = queued(store, age_s=300), queued(store, age_s=200)
    publish_job(celery, second.id, QUEUE)  # first's message is behind it, or gone: not knowable

    assert requeue_orphans(store, celery, [QUEUE]) == []
    assert messages(api_redis, QUEUE) == [second.id]
    assert first.id not in messages(api_redis, QUEUE)
