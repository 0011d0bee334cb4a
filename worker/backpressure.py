"""Back-pressure from storage: a worker whose spool is full takes no new job until it drains.

How the worker stops taking jobs, given kombu's prefetch: with the solo pool,
late acknowledgement and a prefetch of one, a worker holds one message at a
time, the one its running task handles, and fetches the next only once that
task returns. So a task that does not return is what keeps a worker from
taking more. A message that arrives while the spool is full is turned away:
its job, still `queued` and never claimed, gets a fresh message at the head of
its queue, where any other worker takes it next; then the task waits until
the spool has room (or the worker stops) and returns without running the job,
its own message acknowledged and dropped.

Not the alternatives: waiting before the claim while holding the message would
keep the job from every other worker for as long as storage is away; cancelling
the Celery consumer is a remote-control round trip that races with a message
already fetched, which would still need turning away. The scheduler that is to
replace dispatch (asking before it takes) will make this module unnecessary.

Jobs the worker took before its spool filled (one denoising, one prepared
behind it) still run and spool their images: the budget is exceeded by at most
their images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from shared.jobs import JobRecord
from shared.queue import job_message
from worker.storing import Storer

log = logging.getLogger(__name__)

# How often a worker waiting for room looks whether it is stopping (a warm
# shutdown ends the wait; the job turned away is queued elsewhere already).
STOP_POLL_S = 0.5


def turn_away(client: redis.Redis, record: JobRecord | None, storer: Storer) -> None:
    """Give the queued job `record` (None: its message is not ours to run) back to
    the head of its queue, for another worker; say why."""
    if record is not None:
        requeue_at_head(client, record)
    log.warning(
        "storage spool full (%d bytes; %d job(s) waiting for storage): taking no new job "
        "until it drains%s",
        storer.spool.used_bytes,
        len(storer.waiting),
        f"; job {record.id} goes back to the head of its queue" if record is not None else "",
    )


def wait_for_room(storer: Storer, stopping: Callable[[], bool]) -> None:
    """Return once the spool is not full, or the worker is stopping."""
    while storer.full and not stopping():
        storer.spool.wait_for_room(STOP_POLL_S)


def requeue_at_head(client: redis.Redis, record: JobRecord) -> None:
    """A fresh message for the queued job, where its queue's consumers take the next.

    kombu pushes new messages onto the left of a queue's list and its consumers
    pop from the right (BRPOP), so a message pushed on the right goes first: the
    job keeps its turn, as it keeps its place in the waiting set.
    """
    message = job_message(record.id, record.queue, record.priority)
    client.rpush(message.list_name, message.payload)
