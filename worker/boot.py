"""Worker start-up: load the model (with fallback), announce it, pick the queues to consume."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass

import redis
import torch
from celery import Celery

from shared.cancel import cancels_requested
from shared.connections import master_check, redis_client
from shared.constants import (
    DEFAULT_QUEUE,
    GENERATE_TASK,
    NO_MODEL_QUEUE_PREFIX,
    PRIVATE_QUEUE_PREFIX,
    model_queue,
)
from shared.jobs import utcnow
from shared.logs import set_process_context
from shared.queue import make_celery
from shared.reaper import reap_lost_jobs, reap_predecessor_jobs
from shared.registry import ModelEntry, registry_for
from shared.replica_acks import ReplicaAck
from shared.scheduler import Scheduler, announce_resident, announce_serving
from shared.settings import Settings
from shared.storage import Storage, storage_from_settings
from shared.store import JobStore
from shared.webhook_events import WebhookEmitter
from shared.workers import ModelFailure, WorkerInfo
from worker.batching import BatchPolicy
from worker.engine import InlineEngine, ProcessEngine
from worker.finisher import Finisher
from worker.heartbeat import Heartbeat
from worker.loader import LoadedModel, LoadFailure
from worker.metrics import set_gpu_memory, start_counting
from worker.models import model_set
from worker.png_metadata import PngMetadata
from worker.prompts import PromptOptimizer
from worker.runner import JobRunner
from worker.spool import Spool, spool_dir
from worker.stopping import TimeLimits
from worker.storing import WORKER_S3_RETRIES, RetryPolicy, Storer

log = logging.getLogger(__name__)


@dataclass
class WorkerContext:
    heartbeat: Heartbeat
    runner: JobRunner | None
    # The queues the scheduler looks in for this worker's jobs.
    queues: list[str]
    # What Celery consumes: those, and the worker's own (its heartbeat wakes it there).
    consumed: list[str]
    private_queue: str | None = None


def start_worker(
    name: str, settings: Settings, engine: ProcessEngine | None = None
) -> WorkerContext:
    """Load this worker's model and start its heartbeat. Never raises for a model failure.

    `engine`: an engine process launched earlier (it loads while this process
    starts up); one is made here if WORKER_ENGINE=process and none was given.
    """
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    parts = _Parts.of(settings)
    heartbeat = _claim_name(name, parts, settings)
    started = _start_models(name, settings, engine)
    failure_records = [ModelFailure(model=f.model, reason=f.reason) for f in started.failures]
    loaded = started.loaded
    if loaded is None:
        log.critical(no_pipeline_message(started.failures))
        # Stay up (so GET /status can say why) but consume only a private queue.
        idle = [NO_MODEL_QUEUE_PREFIX + name]
        heartbeat.update(state="no_model", failures=failure_records, queues=idle)
        return WorkerContext(heartbeat=heartbeat, runner=None, queues=idle, consumed=idle)

    # The current model's queue first, then the others it serves, then the shared one.
    served = started.served
    queues = [model_queue(m) for m in dict.fromkeys([loaded.name, *served])] + [DEFAULT_QUEUE]
    private = private_queue(name)
    pipelines = started.pipelines
    runner = _runner(name, settings, parts, loaded, queues, pipelines, heartbeat)

    def models_changed(tiers: dict[str, str]) -> None:
        heartbeat.update_soon(models=tiers, model=pipelines.current or loaded.name)
        with contextlib.suppress(redis.RedisError):
            announce_resident(parts.client, name, tiers, served, settings.worker_ttl_s)

    pipelines.on_models = models_changed
    heartbeat.on_beat = functools.partial(
        _on_beat, parts.store, parts.scheduler, runner, settings, served, private, parts.celery
    )
    # "ready" is announced by the worker_ready signal, once Celery consumes.
    heartbeat.update(
        state="starting",
        model=loaded.name,
        models=dict(pipelines.tiers),
        served=list(served),
        device=loaded.plan.device,
        queues=queues,
        failures=failure_records,
    )
    set_process_context(model=loaded.name)
    start_counting(loaded.name)
    set_gpu_memory(loaded.plan.device, runner.gpu_memory())
    log.info("worker %s ready: serving %s, consuming %s", name, loaded.name, ", ".join(queues))
    consumed = [*queues, private]
    return WorkerContext(heartbeat, runner, queues, consumed, private)


@dataclass(frozen=True)
class _Parts:
    """What a worker talks to: Redis (its store and the scheduler), storage, Celery."""

    client: redis.Redis
    storage: Storage
    celery: Celery
    store: JobStore
    scheduler: Scheduler

    @classmethod
    def of(cls, settings: Settings) -> _Parts:
        client = redis_client(settings)
        storage = storage_from_settings(settings, s3_retries=WORKER_S3_RETRIES)
        celery = make_celery(settings)
        store = JobStore(
            client,
            settings.job_ttl_s,
            on_event=WebhookEmitter(celery, settings, storage),
            replica_ack=ReplicaAck.from_settings(settings, master_check(settings)),
            half_life_s=settings.fair_share_half_life_s,
        )
        scheduler = Scheduler(client, settings.fair_share_half_life_s)
        return cls(client, storage, celery, store, scheduler)


def _claim_name(name: str, parts: _Parts, settings: Settings) -> Heartbeat:
    """This worker's record under `name`, its heartbeat started; the jobs a predecessor of
    that name left running or reserved are handed back. Exits if a live worker holds it."""
    heartbeat = Heartbeat(
        parts.client,
        WorkerInfo(name=name, state="loading", pid=os.getpid(), started_at=utcnow().isoformat()),
        ttl_s=settings.worker_ttl_s,
    )
    holder = heartbeat.claim(wait_s=settings.worker_ttl_s)
    if holder is not None:
        log.critical(name_taken_message(holder))
        raise SystemExit(1)  # Celery's worker stops and exits with this code
    heartbeat.start()
    reaped = reap_predecessor_jobs(parts.store, parts.scheduler, name, settings.job_max_attempts)
    for job_id in reaped:
        log.warning(
            "job %s was left running under this worker's name (or reserved by it): handed back",
            job_id,
        )
    return heartbeat


@dataclass(frozen=True)
class _Started:
    loaded: LoadedModel | None  # None: no model would load
    failures: list[LoadFailure]
    served: list[str]  # the models this worker may load
    pipelines: ProcessEngine | InlineEngine


def _start_models(name: str, settings: Settings, engine: ProcessEngine | None) -> _Started:
    """The engine (a process of its own, or inline) with its first model loaded."""
    if settings.worker_engine == "process":
        engine = engine or ProcessEngine(settings, name)
        loaded, failures = engine.start()
        return _Started(loaded, failures, engine.allowed, engine)
    models, order = model_set(settings, None)
    loaded, failures = models.start(order)
    return _Started(loaded, failures, models.allowed, InlineEngine(models, settings))


def _runner(
    name: str,
    settings: Settings,
    parts: _Parts,
    loaded: LoadedModel,
    queues: list[str],
    pipelines: ProcessEngine | InlineEngine,
    heartbeat: Heartbeat,
) -> JobRunner:
    registry = registry_for(settings)
    runner = JobRunner(
        parts.store,
        parts.storage,
        loaded,
        name,
        parts.scheduler,
        queues,
        PromptOptimizer(registry.runtime.prompt_optimization, settings),
        time_limits=_time_limits(loaded.entry, settings),
        batching=_batching(loaded.entry),
        finisher=Finisher(),
        engine=pipelines,
        storer=_storer(settings, name, parts.storage, parts.store),
        registry=registry,
        swap_after_s=settings.model_swap_after_s,
        claim_ttl_s=settings.worker_ttl_s,
        png_metadata=PngMetadata.from_settings(settings, registry.models),
        on_start=lambda ids: heartbeat.update_soon(
            state="busy", current_job=ids[0], current_batch=ids if len(ids) > 1 else []
        ),
        on_idle=lambda: heartbeat.update_soon(
            state="ready", current_job=None, current_batch=[], jobs_done=runner.jobs_done
        ),
    )
    return runner


def private_queue(name: str) -> str:
    """The worker's own queue: tokens its heartbeat sends to wake it."""
    return PRIVATE_QUEUE_PREFIX + name


def _on_beat(
    store: JobStore,
    scheduler: Scheduler,
    runner: JobRunner,
    settings: Settings,
    served: list[str],
    private: str,
    celery: Celery,
) -> None:
    """Every heartbeat: say which models this worker serves (for ETAs), hand on the
    jobs of dead workers, and wake this worker if it is idle while its queues hold
    work (a wake-up token can be lost with a worker killed as it took it)."""
    announce_serving(store.redis, runner.worker_name, served, settings.worker_ttl_s)
    tiers = runner.engine.tiers if runner.engine is not None else {}
    announce_resident(store.redis, runner.worker_name, tiers, served, settings.worker_ttl_s)
    reap_lost_jobs(store, scheduler, settings.job_max_attempts)
    if not runner.running_jobs and not runner.busy and scheduler.has_work(runner.queues):
        celery.send_task(GENERATE_TASK, args=[""], queue=private, retry=False)


def _time_limits(entry: ModelEntry, settings: Settings) -> TimeLimits:
    return TimeLimits(
        soft_s=entry.soft_time_limit_s or settings.job_soft_time_limit_s,
        hard_s=entry.time_limit_s or settings.job_time_limit_s,
    )


def _storer(settings: Settings, name: str, storage: Storage, store: JobStore) -> Storer:
    spool = Spool(spool_dir(settings.storage_spool_dir, name), settings.storage_spool_bytes)
    # A predecessor's images under this name: its jobs were handed back above.
    spool.clear()
    policy = RetryPolicy(settings.storage_retry_s, settings.storage_retry_max_delay_s)
    canceled = functools.partial(cancels_requested, store.redis)
    return Storer(storage, spool, policy, canceled)


def _batching(entry: ModelEntry) -> BatchPolicy | None:
    policy = BatchPolicy(max_images=entry.max_batch_size, window_s=entry.batch_window)
    if not policy.enabled:
        return None
    log.info(
        "dynamic batching on: up to %d images per call, waiting up to %.3fs for companions",
        policy.max_images,
        policy.window_s,
    )
    return policy


def name_taken_message(holder: WorkerInfo) -> str:
    return (
        f"darkroom worker: the name {holder.name!r} belongs to a live worker "
        f"(pid {holder.pid}, {holder.state}, started {holder.started_at}); every worker "
        "process needs a name of its own: drop --name to get a unique one, or choose another"
    )


def no_pipeline_message(failures: list[LoadFailure]) -> str:
    reasons = "; ".join(f"{f.model}: {f.reason}" for f in failures) or "no model to try"
    return f"no image pipeline could be initialised ({reasons})"
