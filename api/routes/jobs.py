"""Jobs: submit, poll, list, cancel, stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.auth import OwnerDep
from api.control import (
    cancel_job,
    parse_duration,
    parse_prefer_wait,
)
from api.deps import JobDep, StateDep
from api.events import job_events
from api.reads import public_jobs, wait_until_terminal
from api.submission import submit_job
from shared.errors import InvalidRequest
from shared.jobs import MAX_DEADLINE_S, Job, JobCreate, JobList, JobStatus
from shared.public import build_public
from shared.webhooks import webhook_info

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Job,
    responses={
        429: {"description": "Over a rate limit of the caller's API key; see Retry-After."},
        503: {"description": "Redis or the broker is unreachable; nothing was queued."},
    },
)
async def create_job(
    body: JobCreate,
    state: StateDep,
    owner: OwnerDep,
    response: Response,
    prefer: Annotated[str | None, Header(max_length=256)] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    cancel_after: Annotated[str | None, Header(max_length=64)] = None,
) -> Job:
    """Queue a generation job: 202 with the job and its `Location`; poll that URL.

    - `Idempotency-Key`: a retry with the same key and body returns the original
      job and queues nothing; the same key with another body answers 409.
    - `Prefer: wait` (or `wait=N`, at most 60 s) holds the answer until the job
      finished (201) or the wait ends (202).
    - `Cancel-After` (e.g. `90s`, `5m`) is the same as the `deadline` field.

    429 with `Retry-After` when the caller's API key is over a rate limit.
    """
    wait_s = parse_prefer_wait(prefer)
    if cancel_after is not None and body.deadline is None:
        deadline = parse_duration(cancel_after)
        if deadline > MAX_DEADLINE_S:
            raise InvalidRequest(f"Cancel-After exceeds {MAX_DEADLINE_S} s", "deadline")
        body = body.model_copy(update={"deadline": deadline})
    submission = await run_in_threadpool(submit_job, state, body, idempotency_key, owner)
    record = submission.record
    response.headers["Location"] = f"/jobs/{record.id}"
    if submission.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    elif not wait_s:
        # As stored, nothing read back: no webhook attempt yet, and the queue
        # position came with the create.
        return build_public(
            record,
            submission.queue_position,
            webhook_info(record, []),
            state.storage,
            state.settings.public_base_url,
        )
    if wait_s:
        record = await wait_until_terminal(state, record.id, wait_s)
    if record.status.is_terminal() and wait_s:
        response.status_code = status.HTTP_201_CREATED
    [job] = await public_jobs(state, [record])
    return job


@router.get("", response_model=JobList)
async def list_jobs(
    state: StateDep,
    owner: OwnerDep,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[
        float | None,
        Query(ge=0, allow_inf_nan=False, description="next_cursor of the previous page"),
    ] = None,
) -> JobList:
    """The caller's recent jobs, newest first; follow `next_cursor` for older ones."""
    records, next_cursor = await run_in_threadpool(
        state.store.list, limit, cursor, status_filter, owner
    )
    return JobList(
        jobs=await public_jobs(state, records),
        next_cursor=str(next_cursor) if next_cursor is not None else None,
    )


@router.get("/{job_id}", response_model=Job, responses={404: {"description": "No such job."}})
async def get_job(job: JobDep, state: StateDep) -> Response:
    """The job as it stands: status, progress, queue position, images (fresh URLs) or error."""
    [public] = await public_jobs(state, [job])
    # Serialised once here: returning the model would have FastAPI validate it
    # against response_model again, the largest cost of this hot path after Redis.
    return Response(public.model_dump_json(), media_type="application/json")


@router.post("/{job_id}/cancel", response_model=Job)
async def cancel(job: JobDep, state: StateDep, response: Response) -> Job:
    """Cancel a job. Queued: canceled at once (200). Running: stops at its next
    denoising step (202, `cancel_requested` true). Finished: 409."""
    record = await run_in_threadpool(cancel_job, state, job)
    if not record.status.is_terminal():
        response.status_code = status.HTTP_202_ACCEPTED
    [public] = await public_jobs(state, [record])
    return public


@router.get("/{job_id}/events", response_class=StreamingResponse)
async def events(job: JobDep, state: StateDep) -> StreamingResponse:
    """Server-Sent Events: `status` on each status change, `progress` as steps advance;
    the stream ends after the terminal status."""
    # JobDep answers 404 before the stream starts.
    return StreamingResponse(
        job_events(state, job.id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
