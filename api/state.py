"""What the API process holds while it runs, built in the app's lifespan."""

from __future__ import annotations

import functools
import gc
from dataclasses import dataclass

import redis
from celery import Celery

from api.loras import LoraCatalog
from api.metrics import ApiMetrics
from api.readiness import Readiness
from api.serving import ServingView
from shared.apikeys import KeyRing
from shared.connections import (
    async_master_check,
    master_check,
    multiplexed_client,
    redis_client,
)
from shared.multiplexed import MultiplexedRedis
from shared.queue import make_celery
from shared.registry import Registry, registry_for
from shared.replica_acks import AsyncMasterCheck, ReplicaAck
from shared.scheduler import Scheduler
from shared.settings import Settings
from shared.storage import Storage, storage_from_settings
from shared.store import JobStore
from shared.webhook_events import WebhookEmitter


@dataclass
class AppState:
    settings: Settings
    registry: Registry
    # The synchronous client, for code that runs on worker threads (the job store).
    redis: redis.Redis
    # The API's async client: one shared, self-pipelining connection for everything
    # served on the event loop (polls, submissions, streams, the compatible APIs).
    mux: MultiplexedRedis
    # Submissions' own when each waits for replicas (REDIS_MIN_REPLICAS_ACK): a WAIT
    # holds its connection up to REDIS_ACK_TIMEOUT_S, and polls must not queue behind it.
    submit_mux: MultiplexedRedis
    # Under Sentinel: whether the sentinels stand behind the master that took a
    # submission (one confirmed by replicas counts only then).
    master_check: AsyncMasterCheck | None
    store: JobStore
    storage: Storage
    celery: Celery
    # The accepted API keys (digests); empty when authentication is off.
    keys: KeyRing
    # This process's counters (the app's own registry; /metrics renders it).
    metrics: ApiMetrics
    # /readyz's bounded checks of Redis and the storage.
    readiness: Readiness
    # The fair-share scheduler's reads (GET /me's usage and share).
    scheduler: Scheduler
    # Which models the live workers can serve (submissions, model lists).
    serving: ServingView
    # The LoRA adapters each key may use (the registry's and its own).
    loras: LoraCatalog

    @classmethod
    def build(cls, settings: Settings, metrics: ApiMetrics) -> AppState:
        client = redis_client(settings)
        storage = storage_from_settings(settings)
        celery = make_celery(settings)
        emitter = WebhookEmitter(celery, settings, storage)
        mux = multiplexed_client(settings)
        replica_ack = ReplicaAck.from_settings(settings, master_check(settings))
        registry = registry_for(settings)
        state = cls(
            settings=settings,
            registry=registry,
            redis=client,
            mux=mux,
            submit_mux=(
                multiplexed_client(settings, extra_timeout_s=settings.redis_ack_timeout_s)
                if replica_ack is not None
                else mux
            ),
            master_check=async_master_check(settings),
            store=JobStore(
                client,
                settings.job_ttl_s,
                on_event=emitter,
                replica_ack=replica_ack,
                half_life_s=settings.fair_share_half_life_s,
            ),
            storage=storage,
            celery=celery,
            keys=KeyRing(settings.api_key_policies),
            metrics=metrics,
            readiness=Readiness(mux, storage),
            scheduler=Scheduler(client, settings.fair_share_half_life_s),
            serving=ServingView(client),
            loras=LoraCatalog(
                registry,
                client,
                storage,
                settings.lora_max_bytes,
                settings.lora_max_per_key,
            ),
        )
        _freeze_startup_heap()
        return state

    async def close(self) -> None:
        self.redis.close()
        await self.mux.aclose()
        if self.submit_mux is not self.mux:
            await self.submit_mux.aclose()


@functools.cache  # once per process: a test session builds many apps
def _freeze_startup_heap() -> None:
    """Take what start-up made (modules, the app, this state) out of the collector's
    generations: it lives as long as the process.

    Otherwise every full collection walks all of it, tens of milliseconds each,
    and under load the API spent about a tenth of its time there. Fast Python
    servers (vLLM's, for one) freeze after start-up the same way.
    """
    gc.collect()
    gc.freeze()
