"""Job control on the API side: cancel, deadlines, waiting for a job, and their header syntax."""

from __future__ import annotations

import re

from api.state import AppState
from shared.cancel import request_cancel
from shared.errors import InvalidRequest, InvalidTransition
from shared.jobs import DEADLINE_ERROR, JobRecord, JobStatus

MAX_WAIT_S = 60.0
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def cancel_job(state: AppState, record: JobRecord) -> JobRecord:
    """Cancel a job: a queued one at once; a running one at its next denoising step.

    Raises InvalidTransition (409) for a job that already finished.
    """
    if record.status.is_terminal():
        raise InvalidTransition(f"job {record.id} is already {record.status}")
    if record.status is JobStatus.QUEUED:
        try:
            return state.store.transition(record.id, JobStatus.CANCELED)
        except InvalidTransition:
            record = state.store.get(record.id)  # a worker claimed it meanwhile
            if record.status.is_terminal():
                raise
    request_cancel(state.redis, record.id, state.settings.job_ttl_s)
    state.store.update(record.id, cancel_requested=True)
    return record.model_copy(update={"cancel_requested": True})


def expire_if_past_deadline(state: AppState, record: JobRecord) -> JobRecord:
    """A job still queued at its deadline ends there, without running."""
    if record.status is not JobStatus.QUEUED or not record.past_deadline():
        return record
    try:
        return state.store.transition(record.id, JobStatus.CANCELED, error=DEADLINE_ERROR)
    except InvalidTransition:
        return state.store.get(record.id)


def parse_prefer_wait(prefer: str | None) -> float | None:
    """`Prefer: wait` (60 s) or `Prefer: wait=N` (capped at 60 s); None when absent."""
    if not prefer:
        return None
    for preference in prefer.split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        if not value:
            return MAX_WAIT_S
        try:
            seconds = float(value.strip().strip('"'))
        except ValueError:
            raise InvalidRequest(f"Prefer: wait={value} is not a number of seconds") from None
        return max(0.0, min(seconds, MAX_WAIT_S))
    return None


def parse_duration(text: str) -> float:
    """`Cancel-After` values: seconds ("90", "90s") or "1h30m", "5m", "1m30s"."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise InvalidRequest(f"Cancel-After {text!r} is not a duration like 90s, 5m or 1h30m")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise InvalidRequest("Cancel-After must be a positive duration")
    return total
