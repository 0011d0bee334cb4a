"""The darkroom HTTP API: `uvicorn api.main:app`."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.limits import BodySizeLimit
from api.retention import prune_local_images
from api.routes import files, jobs, models, system
from api.state import AppState
from shared.logs import configure_logging
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or get_settings()
        configure_logging(resolved.log_level)
        app.state.darkroom = AppState.build(resolved)
        pruner = asyncio.create_task(prune_local_images(app.state.darkroom))
        yield
        pruner.cancel()
        app.state.darkroom.close()

    app = FastAPI(
        title="darkroom",
        description="Diffusion image generation as an async job queue.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(BodySizeLimit, max_bytes=(settings or get_settings()).max_request_bytes)
    install_error_handlers(app)
    for module in (jobs, models, system, files):
        app.include_router(module.router)
    return app


app = create_app()
