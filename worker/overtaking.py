"""Which queued job, if any, should run before one a worker has prepared ahead."""

from __future__ import annotations

from shared.constants import PRIORITIES
from shared.jobs import JobRecord, JobStatus
from shared.store import PRIORITY_BAND, JobStore, waiting_key


def overtaker(store: JobStore, queues: list[str], record: JobRecord) -> JobRecord | None:
    """The first queued job of a higher priority than `record` in `queues`, or None.

    Reads the head of each waiting set (one round trip): their scores order jobs
    by priority, then arrival, so only a head can outrank `record`.
    """
    floor = PRIORITIES[record.priority] * PRIORITY_BAND
    if floor == 0 or not queues:  # nothing outranks the highest priority
        return None
    pipe = store.redis.pipeline(transaction=False)
    for queue in queues:
        pipe.zrange(waiting_key(queue), 0, 0, withscores=True)
    heads = [head for page in pipe.execute() for head in page]
    for _, job_id in sorted((score, raw) for raw, score in heads if score < floor):
        candidate = store.get_or_none(job_id.decode())
        if candidate is not None and candidate.status is JobStatus.QUEUED:
            return candidate
    return None
