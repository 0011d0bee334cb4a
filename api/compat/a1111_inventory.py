"""A1111's inventory endpoints that clients call at start-up, answered truthfully.

Open WebUI, SillyTavern and webuiapi ask for upscalers, VAEs, embeddings, styles
and the like when they connect, and fall back when a list is empty; a 404 makes
some of them give up. darkroom has none of these A1111 extras (its models,
samplers, LoRA adapters and upscalers have endpoints of their own), so the lists are
empty, in A1111's shapes. `/memory` reports the API host's RAM: the GPUs are the
workers' (GET /status). `/skip` stops the caller's current job and lets the rest
of its call run on, as A1111 skips one image of a batch.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from api.auth import OwnerDep, require_owner
from api.compat import A1111_PREFIX, a1111_progress
from api.compat.jobs import mark_skipped
from api.deps import StateDep
from shared.hires import LATENT_UPSCALERS

router = APIRouter(prefix=A1111_PREFIX, tags=["automatic1111"], include_in_schema=False)

# Endpoints whose answer is an empty list here (darkroom has none of these).
_EMPTY_LISTS = (
    "sd-vae",
    "sd-modules",
    "hypernetworks",
    "face-restorers",
    "realesrgan-models",
    "prompt-styles",
)


def _empty_list() -> list[Any]:
    return []


for _path in _EMPTY_LISTS:
    router.add_api_route(f"/{_path}", _empty_list, dependencies=[Depends(require_owner)])


@router.get("/latent-upscale-modes")
def latent_upscale_modes(owner: OwnerDep) -> list[dict[str, str]]:
    """The hires fix's latent upscalers (`hr_upscaler`), as A1111 names them."""
    return [{"name": name} for name in LATENT_UPSCALERS]


@router.get("/embeddings")
def embeddings(owner: OwnerDep) -> dict[str, Any]:
    """Textual-inversion embeddings: none loaded (A1111's shape)."""
    return {"loaded": {}, "skipped": {}}


@router.get("/cmd-flags")
def cmd_flags(owner: OwnerDep) -> dict[str, Any]:
    """The A1111 command-line flags that describe darkroom: an API without A1111's UI."""
    return {"api": True, "nowebui": True}


@router.get("/memory")
async def memory(owner: OwnerDep) -> dict[str, Any]:
    """The API host's RAM (A1111's shape); CUDA memory is the workers' (GET /status)."""
    return {
        "ram": await run_in_threadpool(_ram),
        "cuda": {"error": "darkroom's GPUs are on its workers: see GET /status"},
    }


@router.post("/refresh-checkpoints")
def refresh_checkpoints(owner: OwnerDep) -> None:
    """Nothing to rescan: the checkpoints are the registry's (GET /sd-models)."""


@router.post("/skip")
async def skip(state: StateDep, owner: OwnerDep) -> dict[str, Any]:
    """Stop the caller's current job at its next step; the rest of its call runs on."""
    running = await a1111_progress.running_jobs(state, owner)
    if running:
        await run_in_threadpool(mark_skipped, state, running[0].id)
    return {}


def _ram() -> dict[str, int]:
    """Free, used and total bytes of this host's memory (/proc/meminfo where there is one)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    try:
        with open("/proc/meminfo") as info:
            fields = {line.split(":")[0]: line.split()[1] for line in info}
        free = int(fields.get("MemAvailable", free // 1024)) * 1024
    except OSError:
        pass
    return {"free": free, "used": total - free, "total": total}
