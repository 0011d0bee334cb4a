"""Health and readiness: open to all, API keys or not (probes carry no key)."""

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import StateDep
from shared.errors import StorageError

router = APIRouter(tags=["system"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The API process is up (no dependency is checked)."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(state: StateDep) -> JSONResponse:
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
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "not_ready", "checks": checks},
    )
