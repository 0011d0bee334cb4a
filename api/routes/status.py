"""The service's status: Redis, live workers and the models they serve, queue depths."""

from typing import Any

import redis
from fastapi import APIRouter

from api.deps import StateDep
from shared.constants import DEFAULT_QUEUE, broker_lists, model_queue
from shared.workers import WorkerInfo, live_workers

router = APIRouter(tags=["system"])


@router.get("/status")
def service_status(state: StateDep) -> dict[str, Any]:
    """Redis reachability, live workers (with the model each serves) and queue depths."""
    try:
        workers = live_workers(state.redis)
        queues = _queue_depths(state)
    except redis.RedisError as exc:
        return {"status": "down", "redis": {"reachable": False, "error": str(exc)}}
    serving = [w for w in workers if w.model]
    return {
        "status": "ok" if serving else "degraded",
        "redis": {"reachable": True},
        "workers": [w.model_dump() for w in workers],
        "queues": queues,
        "models": _per_model(state, workers, queues),
        "problems": _problems(workers),
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


def _per_model(
    state: StateDep, workers: list[WorkerInfo], queues: dict[str, int]
) -> dict[str, dict[str, int]]:
    return {
        name: {
            "workers": sum(1 for w in workers if w.model == name),
            "queued": queues.get(model_queue(name), 0),
        }
        for name in state.registry.models
    }


def _problems(workers: list[WorkerInfo]) -> list[str]:
    problems = []
    for worker in workers:
        if worker.state == "no_model":
            reasons = "; ".join(f"{f.model}: {f.reason}" for f in worker.failures)
            problems.append(
                f"worker {worker.name}: no image pipeline could be initialised ({reasons})"
            )
    if not workers:
        problems.append("no live workers: queued jobs wait until one starts")
    return problems
