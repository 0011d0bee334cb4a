"""The Server-Sent Events stream of one job: status, progress and live previews.

Every event carries an `id:`, the job's event counter when it was sent (status
changes, progress writes and previews each count one; shared.jobs.JobRecord).
A client that reconnects with `Last-Event-ID` first gets each status change it
missed since that id (from the job's history: the job as it is now, with the
status it had then), then the current state at once; previews it missed are not
replayed. An open stream marks the job watched, so the worker makes previews.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator

from api.reads import fetch_record, job_views
from api.state import AppState
from shared.jobs import Job, JobRecord, JobStatus
from shared.previews import Preview, Watching, preview_after, preview_seq

POLL_INTERVAL_S = 0.1
KEEPALIVE_S = 15.0


async def job_events(
    state: AppState, job_id: str, last_event_id: int | None = None
) -> AsyncIterator[str]:
    """Yield SSE frames until the job is terminal (or its record expires)."""
    stream = _Stream(state, job_id, last_event_id)
    if last_event_id is not None:
        stream.previews_sent = await preview_seq(state.mux, job_id)
    while True:
        # On the event loop (the shared async client): an open stream holds no thread.
        record = await fetch_record(state, job_id)
        if record is None:
            yield _frame("error", '{"error": {"type": "not_found", "message": "job expired"}}')
            return
        await stream.watch(record)
        numbered = await stream.changes(record)
        if record.status is JobStatus.RUNNING:
            numbered += await stream.previews()
        # A preview stored just before the progress read here has the lower number:
        # events go out in the order of their numbers (stable for equal ones).
        for _, frame in sorted(numbered, key=lambda item: item[0]):
            yield frame
        if record.status.is_terminal():
            return
        if (keepalive := stream.keepalive()) is not None:
            yield keepalive
        await asyncio.sleep(POLL_INTERVAL_S)


class _Stream:
    """What one open stream has sent so far."""

    def __init__(self, state: AppState, job_id: str, resumed_after: int | None):
        self.state = state
        self.job_id = job_id
        self.resumed_after = resumed_after
        self.last: tuple[str, float] | None = None
        self.last_sent = time.monotonic()
        self.watching = Watching(state.mux, job_id)
        # Previews sent (by sequence number): a resumed stream skips those it missed.
        self.previews_sent = 0

    async def watch(self, record: JobRecord) -> None:
        """Keep the job marked watched while it may still make previews."""
        if not record.status.is_terminal():
            await self.watching.keep()

    async def changes(self, record: JobRecord) -> list[tuple[int, str]]:
        """A `status` or `progress` event if the job changed (first: what was missed)."""
        current = (record.status.value, record.progress)
        if current == self.last:
            return []
        [job] = await job_views(self.state, [record])
        frames: list[tuple[int, str]] = []
        if self.last is None and self.resumed_after is not None:
            frames = _missed(record, job, self.resumed_after)
        kind = "status" if self.last is None or self.last[0] != current[0] else "progress"
        frames.append((record.events, _frame(kind, job.model_dump_json(), record.events)))
        self.last, self.last_sent = current, time.monotonic()
        return frames

    async def previews(self) -> list[tuple[int, str]]:
        """The job's latest preview if not sent yet: one event per image."""
        preview = await preview_after(self.state.mux, self.job_id, self.previews_sent)
        if preview is None:
            return []
        self.previews_sent = preview.seq
        self.last_sent = time.monotonic()
        return [
            (preview.seq, _frame("preview", json.dumps(preview_event(preview, index)), preview.seq))
            for index in range(len(preview.images))
        ]

    def keepalive(self) -> str | None:
        if time.monotonic() - self.last_sent <= KEEPALIVE_S:
            return None
        self.last_sent = time.monotonic()
        return ": keep-alive\n\n"


def preview_event(preview: Preview, index: int) -> dict[str, object]:
    """A `preview` event's data: the step it shows and image `index` as base64 WebP."""
    return {
        "step": preview.step,
        "steps": preview.steps,
        "index": index,
        "image": base64.b64encode(preview.images[index]).decode(),
    }


def _missed(record: JobRecord, job: Job, after: int) -> list[tuple[int, str]]:
    """The status changes after event `after` before the current one, as events."""
    changes = [(seq, status) for seq, status in record.history if seq > after]
    if changes and changes[-1][1] is record.status:
        changes.pop()  # the current state: sent next, as it is now
    return [
        (seq, _frame("status", as_it_was(job, status).model_dump_json(), seq))
        for seq, status in changes
    ]


def as_it_was(job: Job, status: JobStatus) -> Job:
    """The job as it is now with an earlier status (no images or error before its end)."""
    if status.is_terminal():
        return job.model_copy(update={"status": status})
    return job.model_copy(
        update={
            "status": status,
            "images": [],
            "error": None,
            "progress": 0.0 if status is JobStatus.QUEUED else job.progress,
        }
    )


def _frame(event: str, data: str, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"
