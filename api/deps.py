"""FastAPI dependencies, as Annotated aliases routes can take as parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.auth import OwnerDep
from api.reads import fetch_record
from api.state import AppState
from shared.errors import JobNotFound
from shared.jobs import JobRecord


async def get_state(request: Request) -> AppState:
    # Async: a sync dependency would cost a thread-pool hop on every request.
    return request.app.state.darkroom  # type: ignore[no-any-return]


StateDep = Annotated[AppState, Depends(get_state)]


async def get_owned_job(job_id: str, state: StateDep, owner: OwnerDep) -> JobRecord:
    """The job named in the path; 404 (JobNotFound) when unknown, expired or not the caller's.

    Another key's job answers exactly like an unknown id: its existence is not revealed.
    Async Redis on the event loop: the check costs polling clients no thread-pool hop.
    """
    record = await fetch_record(state, job_id)
    if record is None or record.owner != owner:
        raise JobNotFound(job_id)
    return record


JobDep = Annotated[JobRecord, Depends(get_owned_job)]
