"""Worker status records: what each live worker serves, read by GET /status and /models."""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

import redis
from pydantic import BaseModel

from shared.constants import WORKER_KEY_PREFIX


class ModelFailure(BaseModel):
    model: str
    reason: str


class WorkerInfo(BaseModel):
    name: str
    state: str  # loading | ready | busy | no_model | stopping
    # What it runs now (the model on its device used last).
    model: str | None = None
    # The models it holds and where: "device", or "host" (warm in host memory).
    models: dict[str, str] = {}
    # The models it may serve (loads on demand): WORKER_MODELS.
    served: list[str] = []
    queues: list[str] = []
    device: str | None = None
    pid: int | None = None
    started_at: str | None = None
    ready_at: str | None = None
    current_job: str | None = None
    # With dynamic batching: every job in the pipeline call now running.
    current_batch: list[str] = []
    jobs_done: int = 0
    failures: list[ModelFailure] = []

    @property
    def loadable(self) -> set[str]:
        """The models whose jobs it may run: the one it runs, and those it loads on demand."""
        return {*self.served, *([self.model] if self.model else [])}


def worker_key(name: str) -> str:
    return WORKER_KEY_PREFIX + name


def unique_name(label: str = "darkroom") -> str:
    """A Celery node name no other worker process has: `<label>-<pid>-<random>@<host>`.

    Liveness, the running-job index and the reaper all key on this name, so two
    processes sharing one (Celery's default is `celery@<host>`) would hide each
    other's death. The random part keeps a restarted process with a recycled pid
    (pid 1 in every container) from taking its dead predecessor's name.
    """
    return f"{label}-{os.getpid()}-{secrets.token_hex(4)}@%h"


def claim_worker(client: redis.Redis, info: WorkerInfo, ttl_s: float) -> bool:
    """Write a worker's first record only if no live worker holds its name."""
    key = worker_key(info.name)
    return bool(client.set(key, info.model_dump_json(), px=int(ttl_s * 1000), nx=True))


def read_worker(client: redis.Redis, name: str) -> WorkerInfo | None:
    raw = client.get(worker_key(name))
    return None if raw is None else WorkerInfo.model_validate_json(raw)


def write_worker(client: redis.Redis, info: WorkerInfo, ttl_s: float = 15.0) -> None:
    """Write a worker's record; it expires unless the heartbeat rewrites it."""
    client.set(worker_key(info.name), info.model_dump_json(), px=int(ttl_s * 1000))


def remove_worker(client: redis.Redis, name: str) -> None:
    client.delete(worker_key(name))


def alive(client: redis.Redis, names: set[str]) -> set[str]:
    """Which of `names` have a live record (one pipelined round trip, no keyspace scan)."""
    ordered = sorted(names)
    pipe = client.pipeline(transaction=False)
    for name in ordered:
        pipe.exists(worker_key(name))
    return {name for name, found in zip(ordered, pipe.execute(), strict=True) if found}


def live_workers(client: redis.Redis) -> list[WorkerInfo]:
    keys = sorted(client.scan_iter(match=WORKER_KEY_PREFIX + "*", count=500))
    if not keys:
        return []
    values: list[Any] = client.mget(keys)
    return [WorkerInfo.model_validate(json.loads(v)) for v in values if v is not None]
