"""Give queued jobs whose Celery message is gone a new one.

kombu's Redis transport pops a message (BRPOP) and then, in a second step,
records it as unacknowledged. A worker killed between the two (an idle worker
SIGKILLed just as a job arrives) takes the message with it: the job stays
`queued` with nothing left to deliver it. The chaos soak produced this.

A message's absence is cheap to see only as a whole: when every broker list of
a queue is empty, no job in that queue's waiting set can have a message
waiting, so one that has been queued for ORPHAN_AFTER_S is given a new one. A
job whose message a worker just took is claimed within milliseconds; if the
sweep catches one anyway, the second message finds it running and is dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from celery import Celery

from shared.constants import broker_lists
from shared.jobs import JobStatus, utcnow
from shared.queue import publish_job
from shared.store import JobStore, waiting_key

log = logging.getLogger(__name__)

# Well above a claim (milliseconds) and a worker's restart; a message lost now
# waits at most this long, plus one reaper round.
ORPHAN_AFTER_S = 30.0
# Waiting jobs looked at per queue and round; the oldest first.
SWEEP_DEPTH = 100


def requeue_orphans(
    store: JobStore,
    celery: Celery,
    queues: Iterable[str],
    after_s: float = ORPHAN_AFTER_S,
    skip: set[str] | None = None,
) -> list[str]:
    """Publish a new message for each queued job of `queues` that has no message left.

    `skip`: jobs whose message a live worker holds (shared.held), waiting there
    for the device, however long the job before them takes.
    """
    requeued = []
    for queue in queues:
        if _messages_waiting(store, queue):
            continue
        requeued += _republish_old(store, celery, queue, after_s, skip or set())
    return requeued


def _messages_waiting(store: JobStore, queue: str) -> int:
    pipe = store.redis.pipeline(transaction=False)
    for name in broker_lists(queue):
        pipe.llen(name)
    return sum(pipe.execute())


def _republish_old(
    store: JobStore, celery: Celery, queue: str, after_s: float, skip: set[str]
) -> list[str]:
    ids = store.redis.zrange(waiting_key(queue), 0, SWEEP_DEPTH - 1)
    cutoff = utcnow() - timedelta(seconds=after_s)
    requeued = []
    for record in store.get_many([raw.decode() for raw in ids]):  # type: ignore[union-attr]
        if (
            record.status is JobStatus.QUEUED
            and record.created_at < cutoff
            and record.id not in skip
        ):
            log.warning(
                "job %s has been queued since %s with no message left in %s (its worker "
                "died as it took it): publishing it again",
                record.id,
                record.created_at.isoformat(),
                queue,
            )
            publish_job(celery, record.id, record.queue, record.priority)
            requeued.append(record.id)
    return requeued
