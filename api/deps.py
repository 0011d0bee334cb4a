"""FastAPI dependencies, as Annotated aliases routes can take as parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.auth import OwnerDep
from api.reads import fetch_snapshot
from api.state import AppState
from shared.errors import JobNotFound
from shared.jobs import JobRecord
from shared.snapshot import JobSnapshot


def state_of(request: Request) -> AppState:
    return request.app.state.darkroom  # type: ignore[no-any-return]


async def get_state(request: Request) -> AppState:
    # Async: a sync dependency would cost a thread-pool hop on every request.
    return state_of(request)


StateDep = Annotated[AppState, Depends(get_state)]


async def owned_snapshot(state: AppState, job_id: str, owner: str) -> JobSnapshot:
    """The job `job_id` with what its public view needs (one round trip); 404
    (JobNotFound) when unknown, expired or not `owner`'s.

    Another key's job answers exactly like an unknown id: its existence is not revealed.
    Async Redis on the event loop: the check costs polling clients no thread-pool hop.
    """
    snapshot = await fetch_snapshot(state, job_id)
    if snapshot is None or snapshot.record.owner != owner:
        raise JobNotFound(job_id)
    return snapshot


async def get_owned_job(job_id: str, state: StateDep, owner: OwnerDep) -> JobRecord:
    """The job named in the path, as owned_snapshot finds it."""
    return (await owned_snapshot(state, job_id, owner)).record


JobDep = Annotated[JobRecord, Depends(get_owned_job)]
