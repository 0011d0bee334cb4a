"""Health and readiness: open to all, API keys or not (probes carry no key)."""

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel

from api.deps import StateDep
from api.readiness import CheckResult

router = APIRouter(tags=["system"])


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    # Per dependency (redis, storage): ok, unreachable, timeout or misconfigured.
    checks: dict[str, CheckResult]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The API process is up (no dependency is checked)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Redis is unreachable."}},
)
async def readyz(state: StateDep, response: Response) -> Readiness:
    """Ready to take jobs: Redis answers (503 otherwise). The image storage is
    reported in `checks.storage` but does not decide: workers hold finished
    images through a storage outage, and submits and polls go on meanwhile."""
    checks = await state.readiness.check()
    ready = checks["redis"] == "ok"
    if not ready:
        response.status_code = 503
    return Readiness(status="ready" if ready else "not_ready", checks=checks)
