"""The darkroom HTTP API: `uvicorn api.main:app`."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from api.auth import UNAUTHORIZED, log_auth_mode, require_owner
from api.body_limit import BodySizeLimit
from api.compat import (
    a1111,
    a1111_extras,
    a1111_inventory,
    a1111_pnginfo,
    comfy_ws,
    comfyui,
    openai_images,
)
from api.errors import install_error_handlers
from api.housekeeping import prune_local_images, reap_forever
from api.metrics import ApiMetrics, MetricsMiddleware
from api.routes import files, jobs, loras, me, models, status, system
from api.routes import metrics as metrics_route
from api.state import AppState
from shared.logs import configure_logging
from shared.settings import Settings, get_settings
from shared.version import darkroom_version


def create_app(settings: Settings | None = None) -> FastAPI:
    metrics = ApiMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        resolved = settings or get_settings()
        configure_logging(resolved.log_level, resolved.log_format)
        app.state.darkroom = AppState.build(resolved, metrics)
        log_auth_mode(app.state.darkroom.keys)
        chores = [
            asyncio.create_task(prune_local_images(app.state.darkroom)),
            asyncio.create_task(reap_forever(app.state.darkroom)),
        ]
        yield
        for chore in chores:
            chore.cancel()
        await app.state.darkroom.close()

    app = FastAPI(
        title="darkroom",
        description="Diffusion image generation as an async job queue.",
        version=darkroom_version(),
        lifespan=lifespan,
    )
    config = settings or get_settings()
    # An adapter upload may be larger than any job: up to LORA_MAX_BYTES, plus its form.
    uploads = {"/loras": config.lora_max_bytes + 64 * 1024}
    app.add_middleware(BodySizeLimit, max_bytes=config.max_request_bytes, uploads=uploads)
    if (settings or get_settings()).metrics_enabled:
        # Outermost: counts every answer, the body-size limit's 413s included.
        app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_error_handlers(app)
    # With API keys configured, everything but the health checks needs one. The
    # OpenAPI schema and /docs stay open: they describe the API, they hold no data.
    # The OpenAI (/v1) and AUTOMATIC1111 (/sdapi/v1) dialects take the same keys.
    for module in (
        *(jobs, models, loras, status, files, me),
        *(openai_images, a1111, a1111_inventory, a1111_pnginfo, a1111_extras),
    ):
        app.include_router(
            module.router, dependencies=[Depends(require_owner)], responses=UNAUTHORIZED
        )
    # ComfyUI's routes answer at the root and under /api, as ComfyUI's own do; its
    # socket checks the key itself (a dependency cannot answer a handshake).
    for prefix in ("", "/api"):
        app.include_router(comfyui.router, prefix=prefix, dependencies=[Depends(require_owner)])
        app.include_router(comfy_ws.router, prefix=prefix)
    app.include_router(system.router)
    app.include_router(metrics_route.router)
    return app


app = create_app()
