"""GET /jobs/{id}, the path every polling client hits: on the event loop, no thread hop.

One pipelined round trip reads the record and its webhook log; a queued job
takes one more for its queue position. Only a queued job found past its
deadline (rare) goes through the synchronous store to be canceled.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from api.control import expire_if_past_deadline
from api.state import AppState
from shared.errors import JobNotFound
from shared.jobs import Job, JobRecord, JobStatus
from shared.public import build_public
from shared.store import decode_record, job_key, waiting_key
from shared.webhooks import log_key, webhook_info


async def read_public_job(state: AppState, job_id: str, owner: str) -> Job:
    """The caller's job as GET returns it; JobNotFound when unknown or another key's."""
    async with state.aredis.pipeline(transaction=False) as pipe:
        pipe.hgetall(job_key(job_id))
        pipe.lrange(log_key(job_id), 0, -1)
        raw, log = await pipe.execute()
    if not raw:
        raise JobNotFound(job_id)
    record = decode_record(raw)
    if record.owner != owner:
        raise JobNotFound(job_id)  # another key's job answers like an unknown one
    if record.status is JobStatus.QUEUED and record.past_deadline():
        record = await run_in_threadpool(expire_if_past_deadline, state, record)
        log = await state.aredis.lrange(log_key(job_id), 0, -1)
    return build_public(
        record,
        await _queue_position(state, record),
        webhook_info(record, log),
        state.storage,
        state.settings.public_base_url,
    )


async def _queue_position(state: AppState, record: JobRecord) -> int | None:
    if record.status is not JobStatus.QUEUED:
        return None
    rank: Any = await state.aredis.zrank(waiting_key(record.queue), record.id)
    return int(rank) if rank is not None else None
