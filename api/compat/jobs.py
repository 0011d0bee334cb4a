"""A compatible API's call as ordinary darkroom jobs: submit them, wait, collect the outcome.

The core does all the work (api.submission: the registry's limits, rate limits,
ownership, the queue, the metrics); this module only submits one or more
`JobCreate`s and waits for them on the event loop, as `Prefer: wait` does, so a
call waiting minutes for a GPU holds no thread.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import redis
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.cancellation import cancel_job
from api.compat.errors import JobCanceled, JobFailed, WaitTimedOut
from api.reads import wait_until_terminal
from api.state import AppState
from api.submission import submit
from shared.constants import KEY_PREFIX
from shared.errors import InvalidRequest, InvalidTransition, JobNotFound
from shared.jobs import MAX_SEED, CompatJobCreate, JobCreate, JobRecord, JobStatus

# Jobs skipped (A1111's /skip): canceled without ending their call; marked long
# enough for any call waiting on them (COMPAT_WAIT_S is at most an hour).
SKIPPED_KEY_PREFIX = KEY_PREFIX + "a1111-skipped:"
SKIP_MARK_TTL_S = 3600

# JobCreate.num_images' limit: a call asking for more images takes several jobs.
MAX_IMAGES_PER_JOB = 4


def split_images(total: int, seed: int | None) -> list[tuple[int, int]]:
    """(seed, images) of each job of a call of `total` images: jobs of at most
    MAX_IMAGES_PER_JOB whose seeds follow on, so image i of the call uses `seed + i`
    whichever job makes it (a job's seed past MAX_SEED starts from 0 again). No
    seed: one random seed for the whole call, low enough never to wrap, so its
    images follow on all the same. A seed out of range is left as sent, for the
    core to refuse naming it."""
    first = secrets.randbelow(MAX_SEED + 2 - total) if seed is None else seed
    in_range = 0 <= first <= MAX_SEED
    starts = range(0, total, MAX_IMAGES_PER_JOB)
    return [
        (
            (first + start) % (MAX_SEED + 1) if in_range else first,
            min(MAX_IMAGES_PER_JOB, total - start),
        )
        for start in starts
    ]


@contextmanager
def foreign_fields(names: Mapping[str, str]) -> Iterator[None]:
    """Refusals of the core name the field as the dialect's client sent it
    (`width` is OpenAI's `size`, `guidance_scale` A1111's `cfg_scale`)."""
    try:
        yield
    except InvalidRequest as exc:
        if exc.field is not None and exc.field in names:
            exc.field = names[exc.field]
        raise


def job_create(
    fields: dict[str, Any], names: Mapping[str, str], allow_empty_prompt: bool = False
) -> JobCreate:
    """`fields` as a JobCreate; a refusal names the field as the dialect calls it.
    `allow_empty_prompt`: a call with no prompt (CompatJobCreate)."""
    schema = CompatJobCreate if allow_empty_prompt else JobCreate
    try:
        return schema.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else None
        foreign = names.get(field, field) if field is not None else None
        raise InvalidRequest(f"{foreign or 'body'}: {error['msg']}", foreign) from None


async def run_jobs(
    state: AppState, owner: str, bodies: list[JobCreate], names: Mapping[str, str]
) -> list[JobRecord]:
    """Submit `bodies` as the caller's jobs and wait (COMPAT_WAIT_S at most) until all ended.

    Raises WaitTimedOut, naming the jobs, when they did not end in time (they keep
    running). Returns the records in order; the caller judges failed or canceled ones.
    """
    job_ids = await submit_jobs(state, owner, bodies, names)
    return await wait_for_jobs(state, job_ids, state.settings.compat_wait_s)


async def submit_jobs(
    state: AppState, owner: str, bodies: list[JobCreate], names: Mapping[str, str]
) -> list[str]:
    """Submit `bodies` as the caller's jobs, all or none (a later refusal cancels the
    earlier ones); their ids."""
    submitted: list[str] = []
    try:
        for body in bodies:
            with foreign_fields(names):
                submission = await submit(state, body, None, owner)
            submitted.append(submission.record.id)
    except Exception:
        # A later job refused (a rate limit, most likely): the call fails as a
        # whole, so the jobs it already queued would only burn GPU time.
        await run_in_threadpool(cancel_quietly, state, submitted)
        raise
    return submitted


async def wait_for_jobs(state: AppState, job_ids: list[str], timeout_s: float) -> list[JobRecord]:
    """Wait for every job on the event loop. Once one fails or is canceled, the
    others are canceled too: the call's answer is decided."""
    waits = {
        asyncio.ensure_future(wait_until_terminal(state, job_id, timeout_s)): job_id
        for job_id in job_ids
    }
    ended: dict[str, JobRecord] = {}
    try:
        pending = set(waits)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                record = task.result()
                ended[record.id] = record
                if pending and await _ends_the_call(state, record):
                    siblings = [waits[t] for t in pending]
                    await run_in_threadpool(cancel_quietly, state, siblings)
    finally:
        for task in waits:
            task.cancel()  # the client went away: stop polling (the jobs go on)
    records = [ended[job_id] for job_id in job_ids]
    unfinished = [record.id for record in records if not record.status.is_terminal()]
    if unfinished:
        raise WaitTimedOut(unfinished, timeout_s)
    return records


async def _ends_the_call(state: AppState, record: JobRecord) -> bool:
    """A failed job, or one canceled but not skipped (A1111's /skip), ends its call."""
    if record.status is JobStatus.FAILED:
        return True
    if record.status is not JobStatus.CANCELED:
        return False
    return not await state.mux.execute("EXISTS", SKIPPED_KEY_PREFIX + record.id)


def mark_skipped(state: AppState, job_id: str) -> None:
    """Cancel one job of a call and let the others run on (A1111's skip)."""
    state.store.redis.set(SKIPPED_KEY_PREFIX + job_id, b"1", ex=SKIP_MARK_TTL_S)
    cancel_quietly(state, [job_id])


def cancel_quietly(state: AppState, job_ids: list[str]) -> None:
    """Cancel what can still be canceled of `job_ids` (best effort, never raises)."""
    for job_id in job_ids:
        try:
            cancel_job(state, state.store.get(job_id))
        except (InvalidTransition, JobNotFound, redis.RedisError):
            continue  # already over, gone, or Redis away: nothing more to do


def check_succeeded(records: list[JobRecord], allow_canceled: bool = False) -> None:
    """Raise JobFailed for the first failed job, JobCanceled for a canceled one (unless allowed)."""
    for record in records:
        reason = record.error.message if record.error else "no images"
        if record.status is JobStatus.FAILED:
            raise JobFailed(record.id, "failed", reason)
        if record.status is JobStatus.CANCELED and not allow_canceled:
            raise JobCanceled(record.id, "canceled", reason)
