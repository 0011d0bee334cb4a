"""Background chores of an API process: reaping jobs of dead workers, pruning local images."""

from __future__ import annotations

import asyncio
import logging

import redis
from kombu.exceptions import OperationalError
from starlette.concurrency import run_in_threadpool

from api.state import AppState
from shared.reaper import reap_lost_jobs
from shared.storage import LocalStorage

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 3600


async def reap_forever(state: AppState) -> None:
    """Re-enqueue jobs whose worker died, even when no other worker is left to notice."""
    settings = state.settings
    while True:
        await asyncio.sleep(settings.worker_ttl_s / 3)
        try:
            await run_in_threadpool(
                reap_lost_jobs, state.store, state.scheduler, settings.job_max_attempts
            )
        except (redis.RedisError, OperationalError) as exc:  # Redis or the broker away
            log.warning("reaper: %s", exc)  # the next round tries again
        except Exception:
            # A bug, not an outage: logged with its traceback, and the loop outlives it,
            # or jobs of dead workers would stay lost for the process's lifetime.
            log.exception("reaper: a round failed")


async def prune_local_images(state: AppState) -> None:
    """Hourly, delete local images older than JOB_TTL_S. S3 buckets use a lifecycle rule."""
    storage = state.storage
    if not isinstance(storage, LocalStorage):
        return
    while True:
        try:
            removed = await run_in_threadpool(storage.prune, state.settings.job_ttl_s)
            if removed:
                log.info(
                    "retention: removed %d image(s) older than %ds",
                    removed,
                    state.settings.job_ttl_s,
                )
        except OSError as exc:
            log.warning("retention: pruning %s failed: %s", storage.root, exc)
        await asyncio.sleep(PRUNE_INTERVAL_S)
