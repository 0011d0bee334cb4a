"""Health and readiness: open to all, API keys or not (probes carry no key)."""

from typing import Literal

import redis
from fastapi import APIRouter, Response
from pydantic import BaseModel

from api.deps import StateDep
from shared.errors import StorageError

router = APIRouter(tags=["system"])


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    # Per dependency (redis, storage): "ok", or why not.
    checks: dict[str, str]


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The API process is up (no dependency is checked)."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Redis or the storage is unreachable."}},
)
def readyz(state: StateDep, response: Response) -> Readiness:
    """Ready to take jobs: Redis and the image storage both answer. 503 otherwise."""
    checks: dict[str, str] = {}
    try:
        state.redis.ping()
        checks["redis"] = "ok"
    except redis.RedisError as exc:
        checks["redis"] = f"unreachable: {exc}"
    try:
        state.storage.ping()
        checks["storage"] = "ok"
    except StorageError as exc:
        checks["storage"] = str(exc)
    ready = all(v == "ok" for v in checks.values())
    if not ready:
        response.status_code = 503
    return Readiness(status="ready" if ready else "not_ready", checks=checks)
