"""Back-pressure from storage: a worker whose spool is full takes no new job until it drains.

A worker takes jobs only by asking the scheduler (shared.scheduler), so a full
spool simply stops it asking: a run of jobs ends before the next reservation,
and a wake-up token that arrives while the spool is full is handed back to the
head of its queue's list, where another worker takes it next. The task then
waits until the spool has room (or the worker stops) and returns; once idle
again, the heartbeat wakes the worker if its queues hold work.

Jobs the worker took before its spool filled (one denoising, one prepared
behind it) still run and spool their images: the budget is exceeded by at most
their images.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from shared.queue import token_message
from worker.storing import Storer

log = logging.getLogger(__name__)

# How often a worker waiting for room looks whether it is stopping (a warm
# shutdown ends the wait; the job turned away is queued elsewhere already).
STOP_POLL_S = 0.5


def turn_away(
    client: redis.Redis, hand_queue: str | None, storer: Storer, sender: str = ""
) -> None:
    """Hand the wake-up token of `hand_queue` (None: none was held; `sender`: the job
    it was sent for) back to the head of its queue's list, for another worker; say why."""
    if hand_queue is not None:
        token_at_head(client, hand_queue, sender)
    log.warning(
        "storage spool full (%d bytes; %d job(s) waiting for storage): taking no new job "
        "until it drains%s",
        storer.spool.used_bytes,
        len(storer.waiting),
        f"; the token of job {sender} goes back to the head of its queue"
        if hand_queue is not None and sender
        else "",
    )


def wait_for_room(storer: Storer, stopping: Callable[[], bool]) -> None:
    """Return once the spool is not full, or the worker is stopping."""
    while storer.full and not stopping():
        storer.spool.wait_for_room(STOP_POLL_S)


def token_at_head(client: redis.Redis, queue: str, sender: str = "") -> None:
    """A wake-up token where the queue's consumers take the next one.

    kombu pushes new messages onto the left of a queue's list and its consumers
    pop from the right (BRPOP), so a token pushed on the right is taken first.
    """
    message = token_message(queue, sender)
    client.rpush(message.list_name, message.payload)
