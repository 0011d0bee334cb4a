"""FastAPI dependencies, as Annotated aliases routes can take as parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.state import AppState
from shared.jobs import JobRecord


def get_state(request: Request) -> AppState:
    return request.app.state.darkroom  # type: ignore[no-any-return]


StateDep = Annotated[AppState, Depends(get_state)]


def get_job(job_id: str, state: StateDep) -> JobRecord:
    """The job named in the path; 404 (JobNotFound) when unknown or expired."""
    return state.store.get(job_id)


JobDep = Annotated[JobRecord, Depends(get_job)]
