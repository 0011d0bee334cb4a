"""Reads of jobs served on the event loop through the API's one async client (the
multiplexed connection), no thread hop: the paths every polling, waiting or
streaming client keeps hitting (GET /jobs/{id}, Prefer: wait, the SSE stream), and
the public view of every job the API answers with.

Only a queued job found past its deadline (rare) goes through the synchronous
store to be canceled.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis
from starlette.concurrency import run_in_threadpool

from api.cancellation import expire_if_past_deadline
from api.state import AppState
from shared.errors import JobNotFound
from shared.jobs import Job, JobRecord, JobStatus
from shared.multiplexed import MultiplexedRedis
from shared.public import POSITION_SCRIPT, job_view, queue_view_reads, view_from_reads
from shared.redis_replies import reply_hash
from shared.snapshot import JobSnapshot, decode_snapshot, read_call
from shared.store import decode_listing, decode_record, job_key, list_call
from shared.webhooks import webhook_info


async def fetch_snapshot(state: AppState, job_id: str) -> JobSnapshot | None:
    """The job as it stands with its queue position and webhook log, in one round
    trip (a queued job past its deadline is canceled first)."""
    call = read_call(job_id, state.settings.fair_share_half_life_s)
    snapshot = decode_snapshot(await state.mux.run_script(call.lua, call.keys, call.args))
    if snapshot is None:
        return None
    record = snapshot.record
    if record.status is JobStatus.QUEUED and record.past_deadline():
        record = await run_in_threadpool(expire_if_past_deadline, state, record)
        snapshot = JobSnapshot(record, None, snapshot.webhook_log)
    return snapshot


async def fetch_record(state: AppState, job_id: str) -> JobRecord | None:
    """The job's record as it stands (a queued job past its deadline is canceled first)."""
    snapshot = await fetch_snapshot(state, job_id)
    return snapshot.record if snapshot is not None else None


def snapshot_view(state: AppState, snapshot: JobSnapshot) -> Job:
    """The public view of a snapshot: nothing more to read."""
    record = snapshot.record
    return job_view(
        record,
        snapshot.queue_position,
        webhook_info(record, snapshot.webhook_log),
        state.storage,
        state.settings.public_base_url,
        snapshot.eta_s,
    )


async def list_records(
    state: AppState,
    limit: int,
    cursor: float | None = None,
    status: JobStatus | None = None,
    owner: str | None = None,
) -> tuple[list[JobRecord], float | None]:
    """JobStore.list on the async client: a page of jobs newest first, and the next
    page's cursor."""
    call = list_call(limit, cursor, status, owner)
    return decode_listing(await state.mux.run_script(call.lua, call.keys, call.args))


async def fetch_records(state: AppState, job_ids: list[str]) -> list[JobRecord]:
    """The records of `job_ids` that still exist, in order, read together."""
    replies = await asyncio.gather(*(state.mux.execute("HGETALL", job_key(i)) for i in job_ids))
    return [decode_record(reply_hash(reply)) for reply in replies if reply]


async def job_views(state: AppState, records: list[JobRecord]) -> list[Job]:
    """The jobs as clients see them: every route that answers with stored jobs goes
    through here. Their extra reads (webhook logs, queue positions) take one round
    trip together, and none when no job has any."""
    reads = _Reads()
    for record in records:
        queue_view_reads(reads, record, state.settings.fair_share_half_life_s)
    answers = iter(await reads.send(state.mux))
    storage, base_url = state.storage, state.settings.public_base_url
    return [view_from_reads(record, answers, storage, base_url) for record in records]


class _Reads:
    """queue_view_reads' pipeline on the multiplexed client: the commands it is
    given, then sent at once (the connection writes them in one batch)."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def lrange(self, name: str, start: int, end: int) -> None:
        self.commands.append(("LRANGE", name, start, end))

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> None:
        self.commands.append(("EVALSHA", sha, numkeys, *keys_and_args))

    async def send(self, mux: MultiplexedRedis) -> list[Any]:
        """The answers, in order (no round trip when there is nothing to read)."""
        try:
            return await self._gather(mux)
        except redis.exceptions.NoScriptError:
            # Redis restarted and forgot the script: load it, read again.
            await mux.execute("SCRIPT", "LOAD", POSITION_SCRIPT.lua.source)
            return await self._gather(mux)

    async def _gather(self, mux: MultiplexedRedis) -> list[Any]:
        return await asyncio.gather(*(mux.execute(*command) for command in self.commands))


async def wait_until_terminal(state: AppState, job_id: str, timeout_s: float) -> JobRecord:
    """Poll the job until it is terminal or `timeout_s` passed (Prefer: wait); returns it
    as it stands. No thread is held while waiting."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        record = await fetch_record(state, job_id)
        if record is None:
            raise JobNotFound(job_id)
        remaining = deadline - time.monotonic()
        if record.status.is_terminal() or remaining <= 0:
            return record
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * 1.5, 0.25)
