"""Jobs: submit, poll, list, cancel, stream."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.auth import OwnerDep, caller
from api.cancellation import cancel_job
from api.deps import JobDep, StateDep, owned_snapshot, state_of
from api.event_stream import job_events
from api.job_headers import parse_duration, parse_prefer_wait
from api.reads import job_views, list_records, snapshot_view, wait_until_terminal
from api.submission import submit
from shared.errors import InvalidRequest, PreviewNotReady
from shared.jobs import MAX_DEADLINE_S, Job, JobCreate, JobList, JobStatus
from shared.previews import latest_preview, mark_watched
from shared.public import job_view
from shared.webhooks import webhook_info

router = APIRouter(prefix="/jobs", tags=["jobs"])

# GET /jobs/{job_id} documents its path parameter here instead of declaring it:
# FastAPI would validate it on every poll, a str its path pattern already delimits.
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


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
    request: Request,
    prefer: Annotated[str | None, Header(max_length=256)] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    cancel_after: Annotated[str | None, Header(max_length=64)] = None,
) -> Response:
    """Queue a generation job: 202 with the job and its `Location`; poll that URL.

    - `Idempotency-Key`: a retry with the same key and body returns the original
      job and queues nothing; the same key with another body answers 409.
    - `Prefer: wait` (or `wait=N`, at most 60 s) holds the answer until the job
      finished (201) or the wait ends (202).
    - `Cancel-After` (e.g. `90s`, `5m`) is the same as the `deadline` field.

    429 with `Retry-After` when the caller's API key is over a rate limit.
    """
    # A hot path like the poll: the state and the caller come from the request,
    # not from dependencies.
    state = state_of(request)
    wait_s = parse_prefer_wait(prefer)
    if cancel_after is not None and body.deadline is None:
        deadline = parse_duration(cancel_after)
        if deadline > MAX_DEADLINE_S:
            raise InvalidRequest(f"Cancel-After exceeds {MAX_DEADLINE_S} s", "deadline")
        body = body.model_copy(update={"deadline": deadline})
    submission = await submit(state, body, idempotency_key, caller(request))
    record = submission.record
    headers = {"Location": f"/jobs/{record.id}"}
    if submission.replayed:
        headers["Idempotent-Replayed"] = "true"
    elif not wait_s:
        # As stored, nothing read back: no webhook attempt yet, and the queue
        # position came with the create.
        base_url = state.settings.public_base_url
        view = webhook_info(record, [])
        job = job_view(record, submission.queue_position, view, state.storage, base_url)
        return job_response(job, status.HTTP_202_ACCEPTED, headers)
    if wait_s:
        record = await wait_until_terminal(state, record.id, wait_s)
    finished = wait_s and record.status.is_terminal()
    [job] = await job_views(state, [record])
    code = status.HTTP_201_CREATED if finished else status.HTTP_202_ACCEPTED
    return job_response(job, code, headers)


@router.get(
    "/{job_id}",
    response_model=Job,
    responses={404: {"description": "No such job."}},
    openapi_extra={"parameters": [_JOB_ID]},
)
async def get_job(request: Request) -> Response:
    """The job as it stands: status, progress, queue position, images (fresh URLs) or error."""
    # The clients' polling path. Declared right after POST /jobs: FastAPI matches
    # routes in order (twice per request), and these two are the hot ones. No
    # dependency beyond the router's API key check: FastAPI spends more on
    # resolving one than the Redis round trip costs.
    state = state_of(request)
    job_id = request.path_params["job_id"]
    snapshot = await owned_snapshot(state, job_id, caller(request))
    return job_response(snapshot_view(state, snapshot))


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
    records, next_cursor = await list_records(state, limit, cursor, status_filter, owner)
    return JobList(
        jobs=await job_views(state, records),
        next_cursor=str(next_cursor) if next_cursor is not None else None,
    )


@router.post("/{job_id}/cancel", response_model=Job)
async def cancel(job: JobDep, state: StateDep, response: Response) -> Job:
    """Cancel a job. Queued: canceled at once (200). Running: stops at its next
    denoising step (202, `cancel_requested` true). Finished: 409."""
    record = await run_in_threadpool(cancel_job, state, job)
    if not record.status.is_terminal():
        response.status_code = status.HTTP_202_ACCEPTED
    [public] = await job_views(state, [record])
    return public


@router.get("/{job_id}/events", response_class=StreamingResponse)
async def events(
    job: JobDep,
    state: StateDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    resume_after: Annotated[
        int | None,
        Query(ge=0, description="Last-Event-ID for clients that cannot set headers."),
    ] = None,
) -> StreamingResponse:
    """Server-Sent Events: `status` on each status change, `progress` as steps advance,
    `preview` (`{step, steps, index, image}`, a base64 WebP per image) while it runs;
    the stream ends after the terminal status. Each event has an `id:`; reconnecting
    with `Last-Event-ID` resends the status changes missed since, then the current
    state (previews are not replayed)."""
    # JobDep answers 404 before the stream starts.
    after = resume_after if resume_after is not None else _event_id(last_event_id)
    return StreamingResponse(
        job_events(state, job.id, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event_id(header: str | None) -> int | None:
    """A Last-Event-ID darkroom sent (an integer); anything else: a fresh stream."""
    value = (header or "").strip()
    return int(value) if value.isdigit() else None


@router.get(
    "/{job_id}/preview",
    response_class=Response,
    responses={
        200: {"content": {"image/webp": {}}, "description": "The latest live preview."},
        404: {"description": "No such job of the caller's, or no preview yet."},
    },
)
async def preview(
    job: JobDep,
    state: StateDep,
    index: Annotated[int, Query(ge=0, le=63, description="Which image of the job.")] = 0,
) -> Response:
    """The job's latest live preview as WebP (at most 512 px on the long side), with
    the step it shows in `X-Preview-Step` / `X-Preview-Steps`. Asking marks the job
    watched: the worker makes previews while someone asks within the last 5 s, so
    the first ask may find none (404 `preview_not_ready`)."""
    if not job.status.is_terminal():
        await mark_watched(state.mux, job.id)
    latest = await latest_preview(state.mux, job.id)
    if latest is None or index >= len(latest.images):
        raise PreviewNotReady(f"job {job.id!r} has no preview {index if index else 'yet'}")
    return Response(
        latest.images[index],
        media_type="image/webp",
        headers={
            "Cache-Control": "no-store",
            "X-Preview-Step": str(latest.step),
            "X-Preview-Steps": str(latest.steps),
            "X-Preview-Images": str(len(latest.images)),
        },
    )


def job_response(
    job: Job, code: int = status.HTTP_200_OK, headers: dict[str, str] | None = None
) -> Response:
    """The job as the answer, serialised once: a returned model would have FastAPI
    validate it against response_model again before serialising it."""
    return Response(job.model_dump_json(), code, headers, media_type="application/json")
