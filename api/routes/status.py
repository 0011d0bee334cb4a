"""The service's status: Redis, live workers and the models they serve, queue depths.

Open to every key, so it shows each caller only what is its own or harmless:
job ids of the caller's jobs alone, and worker pids only to admin keys.
"""

import json
import logging
from typing import Literal

import redis
from fastapi import APIRouter
from pydantic import BaseModel

from api.auth import OwnerDep
from api.deps import StateDep
from shared.constants import DEFAULT_QUEUE, model_queue
from shared.store import job_key, waiting_key
from shared.workers import WorkerInfo, live_workers

log = logging.getLogger(__name__)
router = APIRouter(tags=["system"])


class RedisHealth(BaseModel):
    reachable: bool
    # Only when it is not: "unreachable" or "timeout" (the details are in the API's log).
    error: str | None = None


class ModelLoad(BaseModel):
    # Live workers running the model now.
    workers: int
    # Live workers that may run its jobs: running it, or loading it when one needs it
    # (WORKER_MODELS).
    loadable: int = 0
    # Its jobs waiting in its queue.
    queued: int


class ServiceStatus(BaseModel):
    # ok: some worker serves a model; degraded: none does; down: Redis is unreachable.
    status: Literal["ok", "degraded", "down"]
    redis: RedisHealth
    # The rest is left out when Redis is down: nothing could be read.
    workers: list[WorkerInfo] = []
    # Jobs waiting in each queue (the scheduler's waiting sets: exact).
    queues: dict[str, int] = {}
    models: dict[str, ModelLoad] = {}
    # What an operator should look at, in words.
    problems: list[str] = []


# exclude_unset: what was not measured is left out of the answer, not sent as
# null or empty (redis.error when Redis answers; all but redis when it does not).
@router.get("/status", response_model=ServiceStatus, response_model_exclude_unset=True)
def service_status(state: StateDep, owner: OwnerDep) -> ServiceStatus:
    """Redis reachability, live workers (with the model each serves) and queue depths.

    A worker's running job ids show only to the job's owner, its pid only to admin keys.
    """
    try:
        workers = live_workers(state.redis)
        queues = _queue_depths(state)
        workers = _as_seen_by(state, workers, owner)
    except redis.RedisError as exc:
        log.warning("GET /status: Redis unreachable: %s", exc)
        kind = "timeout" if isinstance(exc, redis.TimeoutError) else "unreachable"
        return ServiceStatus(status="down", redis=RedisHealth(reachable=False, error=kind))
    serving = [w for w in workers if w.model]
    models = _per_model(state, workers, queues)
    return ServiceStatus(
        status="ok" if serving else "degraded",
        redis=RedisHealth(reachable=True),
        workers=workers,
        queues=queues,
        models=models,
        problems=_problems(workers, models),
    )


def _as_seen_by(state: StateDep, workers: list[WorkerInfo], owner: str) -> list[WorkerInfo]:
    """The workers with what `owner` may not see left out: other keys' job ids, and
    (unless its key is an admin's) worker pids."""
    running = sorted({job for w in workers for job in [w.current_job, *w.current_batch] if job})
    pipe = state.redis.pipeline(transaction=False)
    for job_id in running:
        pipe.hget(job_key(job_id), "owner")
    owners = pipe.execute() if running else []
    mine = {job for job, raw in zip(running, owners, strict=True) if _owned_by(raw, owner)}
    admin = state.keys.policy(owner).admin
    return [
        w.model_copy(
            update={
                "current_job": w.current_job if w.current_job in mine else None,
                "current_batch": [job for job in w.current_batch if job in mine],
                "pid": w.pid if admin else None,
            }
        )
        for w in workers
    ]


def _owned_by(raw_owner: bytes | None, owner: str) -> bool:
    return raw_owner is not None and json.loads(raw_owner) == owner


def _queue_depths(state: StateDep) -> dict[str, int]:
    """Queued jobs per queue, from the waiting sets: exact (the broker lists hold
    wake-up tokens, about one per job not yet reserved: docs/scheduling.md)."""
    names = [DEFAULT_QUEUE, *(model_queue(m) for m in state.registry.models)]
    pipe = state.redis.pipeline(transaction=False)
    for name in names:
        pipe.zcard(waiting_key(name))
    return dict(zip(names, pipe.execute(), strict=True))


def _per_model(
    state: StateDep, workers: list[WorkerInfo], waiting: dict[str, int]
) -> dict[str, ModelLoad]:
    return {
        name: ModelLoad(
            workers=sum(1 for w in workers if w.model == name),
            loadable=sum(1 for w in workers if name in w.loadable),
            queued=waiting.get(model_queue(name), 0),
        )
        for name in state.registry.models
    }


def _problems(workers: list[WorkerInfo], models: dict[str, ModelLoad]) -> list[str]:
    problems = []
    for name, load in models.items():
        if load.queued and not load.loadable:
            problems.append(
                f"model {name}: {load.queued} queued job(s) and no live worker serves it "
                f"(they wait until one starts: `darkroom worker --model {name}` or an autoscaler)"
            )
    for worker in workers:
        if worker.state == "no_model":
            reasons = "; ".join(f"{f.model}: {f.reason}" for f in worker.failures)
            problems.append(
                f"worker {worker.name}: no image pipeline could be initialised ({reasons})"
            )
    if not workers:
        problems.append("no live workers: queued jobs wait until one starts")
    return problems
