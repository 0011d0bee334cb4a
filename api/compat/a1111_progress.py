"""A1111's progress and interrupt over darkroom's jobs: the caller's own, never anyone else's.

A1111 runs one job at a time and reports on it; darkroom runs many, for many
API keys. The job reported on is the caller's most recently started running
job, else its newest queued one.
"""

from __future__ import annotations

import asyncio
import base64
import io
import math

from PIL import Image
from starlette.concurrency import run_in_threadpool

from api.compat.a1111_schemas import ProgressAnswer
from api.compat.jobs import cancel_quietly
from api.reads import fetch_record, list_records
from api.state import AppState
from shared.constants import RUNNING_KEY
from shared.jobs import JobRecord, JobStatus, utcnow
from shared.previews import latest_preview, mark_watched

# How many of the caller's newest jobs are looked through for queued ones: a
# bounded read per poll (clients poll progress every second or so).
QUEUED_LOOKBACK = 100


async def running_jobs(state: AppState, owner: str) -> list[JobRecord]:
    """The caller's running jobs, most recently started first.

    The running index holds one entry per busy worker: small, whoever is calling.
    """
    keys = await state.mux.execute("HKEYS", RUNNING_KEY)
    job_ids = [key.decode() if isinstance(key, bytes) else key for key in keys]
    records = await asyncio.gather(*(fetch_record(state, job_id) for job_id in job_ids))
    mine = [
        r for r in records if r is not None and r.owner == owner and r.status is JobStatus.RUNNING
    ]
    return sorted(mine, key=lambda r: r.started_at or r.created_at, reverse=True)


async def progress(state: AppState, owner: str, with_image: bool = True) -> ProgressAnswer:
    """A1111's progress answer for the caller's current job (idle: all zeros), with
    its live preview as `current_image` unless `with_image` is off (A1111's
    skip_current_image). Asking for the image marks the job watched (the worker
    makes previews while someone asks within a few seconds)."""
    running = await running_jobs(state, owner)
    queued = await _queued_jobs(state, owner)
    current = running[0] if running else queued[0] if queued else None
    if current is None:
        return ProgressAnswer(progress=0, eta_relative=0, state=_state(None, 0))
    image = None
    if with_image:
        await mark_watched(state.mux, current.id)
        if current.status is JobStatus.RUNNING:
            preview = await latest_preview(state.mux, current.id)
            if preview is not None:
                image = await run_in_threadpool(_png_grid, preview.images)
    return ProgressAnswer(
        progress=current.progress,
        eta_relative=_eta_s(current),
        state=_state(current, len(running) + len(queued)),
        current_image=image,
        textinfo=_textinfo(current),
    )


def _png_grid(webps: list[bytes]) -> str:
    """The previews as one base64 PNG: several images in a grid, as A1111 shows a batch."""
    images = [Image.open(io.BytesIO(data)).convert("RGB") for data in webps]
    columns = math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    width, height = images[0].size
    grid = Image.new("RGB", (columns * width, rows * height))
    for index, image in enumerate(images):
        grid.paste(image, (index % columns * width, index // columns * height))
    out = io.BytesIO()
    grid.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


async def interrupt(state: AppState, owner: str) -> list[str]:
    """Cancel the caller's running jobs (at their next step); returns their ids."""
    job_ids = [record.id for record in await running_jobs(state, owner)]
    await run_in_threadpool(cancel_quietly, state, job_ids)
    return job_ids


async def _queued_jobs(state: AppState, owner: str) -> list[JobRecord]:
    records, _ = await list_records(state, QUEUED_LOOKBACK, owner=owner)
    return [record for record in records if record.status is JobStatus.QUEUED]


def _eta_s(record: JobRecord) -> float:
    """Seconds left, by the pace so far (0 until the first step is done)."""
    if record.started_at is None or record.progress <= 0:
        return 0.0
    elapsed = (utcnow() - record.started_at).total_seconds()
    return max(0.0, elapsed / record.progress - elapsed)


def _state(record: JobRecord | None, job_count: int) -> dict[str, object]:
    """A1111's `state` snapshot (shared.state.dict()), for one darkroom job."""
    steps = record.params.steps if record is not None else 0
    progress = record.progress if record is not None else 0.0
    return {
        "skipped": False,
        "interrupted": bool(record and record.cancel_requested),
        "stopping_generation": False,
        "job": record.id if record is not None else "",
        "job_count": job_count,
        "job_timestamp": record.created_at.strftime("%Y%m%d%H%M%S") if record else "0",
        "job_no": 0,
        "sampling_step": round(progress * steps),
        "sampling_steps": steps,
    }


def _textinfo(record: JobRecord) -> str:
    if record.status is JobStatus.QUEUED:
        return f"job {record.id}: queued"
    step = round(record.progress * record.params.steps)
    return f"job {record.id}: step {step}/{record.params.steps} on {record.worker or 'a worker'}"
