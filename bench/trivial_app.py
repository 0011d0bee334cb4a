"""The floor for the API rows: FastAPI doing nothing, served like the darkroom API.

`uvicorn bench.trivial_app:app` - same server, same worker count, same log
level as `uvicorn api.main:app`; only the handlers differ. The handlers are
`async def` (no thread pool hop) and touch neither Redis nor pydantic models:
whatever darkroom's routes cost on top of this is darkroom's own.
"""

from fastapi import FastAPI

app = FastAPI(title="trivial")


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@app.get("/ok")
async def get_ok() -> dict[str, bool]:
    return {"ok": True}


@app.post("/ok")
async def post_ok() -> dict[str, bool]:
    # The body is sent (same bytes as POST /jobs) but neither read nor validated.
    return {"ok": True}
