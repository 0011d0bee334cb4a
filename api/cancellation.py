"""Ending a job from the API side: a cancel request, a queued job past its deadline."""

from __future__ import annotations

from api.state import AppState
from shared.cancel import request_cancel
from shared.errors import InvalidTransition
from shared.jobs import DEADLINE_ERROR, JobRecord, JobStatus


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
