"""The service's status: Redis, live workers and the models they serve, queue depths."""

from typing import Any

import redis
from fastapi import APIRouter

from api.deps import StateDep
from shared.constants import DEFAULT_QUEUE, broker_lists, model_queue
from shared.store import waiting_key
from shared.workers import WorkerInfo, live_workers

router = APIRouter(tags=["system"])


@router.get("/status")
def service_status(state: StateDep) -> dict[str, Any]:
    """Redis reachability, live workers (with the model each serves) and queue depths."""
    try:
        workers = live_workers(state.redis)
        queues = _queue_depths(state)
        waiting = _waiting_jobs(state)
    except redis.RedisError as exc:
        return {"status": "down", "redis": {"reachable": False, "error": str(exc)}}
    serving = [w for w in workers if w.model]
    models = _per_model(state, workers, waiting)
    return {
        "status": "ok" if serving else "degraded",
        "redis": {"reachable": True},
        "workers": [w.model_dump() for w in workers],
        "queues": queues,
        "models": models,
        "problems": _problems(workers, models),
    }


def _queue_depths(state: StateDep) -> dict[str, int]:
    names = [DEFAULT_QUEUE, *(model_queue(m) for m in state.registry.models)]
    pipe = state.redis.pipeline(transaction=False)
    for name in names:
        # kombu keeps one list per priority step; a queue's depth is their sum.
        for key in broker_lists(name):
            pipe.llen(key)
    lengths = iter(pipe.execute())
    return {name: sum(next(lengths) for _ in broker_lists(name)) for name in names}


def _waiting_jobs(state: StateDep) -> dict[str, int]:
    """Queued jobs per model queue, from the waiting sets (exact: a broker list
    may still hold the message of a job that already ran in a batch)."""
    names = [model_queue(m) for m in state.registry.models]
    pipe = state.redis.pipeline(transaction=False)
    for name in names:
        pipe.zcard(waiting_key(name))
    return dict(zip(names, pipe.execute(), strict=True))


def _per_model(
    state: StateDep, workers: list[WorkerInfo], waiting: dict[str, int]
) -> dict[str, dict[str, int]]:
    return {
        name: {
            "workers": sum(1 for w in workers if w.model == name),
            "queued": waiting.get(model_queue(name), 0),
        }
        for name in state.registry.models
    }


def _problems(workers: list[WorkerInfo], models: dict[str, dict[str, int]]) -> list[str]:
    problems = []
    for name, counts in models.items():
        if counts["queued"] and not counts["workers"]:
            problems.append(
                f"model {name}: {counts['queued']} queued job(s) and no live worker serves it "
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
