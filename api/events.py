"""The Server-Sent Events stream of one job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from api.reads import fetch_record, public_jobs
from api.state import AppState

POLL_INTERVAL_S = 0.1
KEEPALIVE_S = 15.0


async def job_events(state: AppState, job_id: str) -> AsyncIterator[str]:
    """Yield SSE frames until the job is terminal (or its record expires)."""
    last: tuple[str, float] | None = None
    last_sent = time.monotonic()
    while True:
        # On the event loop (async Redis): an open stream holds no thread.
        record = await fetch_record(state, job_id)
        if record is None:
            yield _frame("error", '{"error": {"type": "not_found", "message": "job expired"}}')
            return
        current = (record.status.value, record.progress)
        if current != last:
            kind = "status" if last is None or last[0] != current[0] else "progress"
            [job] = await public_jobs(state, [record])
            yield _frame(kind, job.model_dump_json())
            last, last_sent = current, time.monotonic()
        if record.status.is_terminal():
            return
        if time.monotonic() - last_sent > KEEPALIVE_S:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(POLL_INTERVAL_S)


def _frame(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"
