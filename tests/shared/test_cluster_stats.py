"""The cluster's state in one script call, on fakeredis (with its Lua engine)."""

from __future__ import annotations

from datetime import timedelta

import fakeredis

from shared.cluster_stats import ANY_MODEL, NO_MODEL, ClusterStats, parse, script_call
from shared.constants import DEFAULT_QUEUE, WEBHOOK_QUEUE, WEBHOOK_RETRY_KEY, model_queue
from shared.jobs import JobStatus, utcnow
from shared.store import JobStore
from shared.workers import WorkerInfo, worker_key
from tests.shared.test_store import make_record

MODELS = ["sdxl", "flux"]


def _read(client: fakeredis.FakeRedis) -> ClusterStats:
    return parse(MODELS, script_call(MODELS).run(client))


def _worker(client: fakeredis.FakeRedis, name: str, model: str | None, state: str) -> None:
    client.set(worker_key(name), WorkerInfo(name=name, model=model, state=state).model_dump_json())


def test_queued_jobs_counted_per_model_and_priority(client: fakeredis.FakeRedis) -> None:
    store = JobStore(client, 600)
    now = utcnow()
    placed = [
        ("sdxl", "high", 2),
        ("sdxl", "normal", 3),
        ("sdxl", "low", 1),
        ("flux", "normal", 1),
        (None, "high", 2),
    ]
    for model, priority, count in placed:
        for i in range(count):
            queue = model_queue(model) if model else DEFAULT_QUEUE
            # Arrival times spread over a year: the bands must not depend on them.
            created = now - timedelta(days=i * 180)
            store.create(make_record(queue=queue, priority=priority, created_at=created))

    stats = _read(client)

    assert stats.queued == {
        ("sdxl", "high"): 2,
        ("sdxl", "normal"): 3,
        ("sdxl", "low"): 1,
        ("flux", "high"): 0,
        ("flux", "normal"): 1,
        ("flux", "low"): 0,
        (ANY_MODEL, "high"): 2,
        (ANY_MODEL, "normal"): 0,
        (ANY_MODEL, "low"): 0,
    }


def test_workers_running_jobs_and_webhook_backlog(client: fakeredis.FakeRedis) -> None:
    store = JobStore(client, 600)
    _worker(client, "w1@a", "sdxl", "busy")
    _worker(client, "w2@a", "sdxl", "ready")
    _worker(client, "w3@b", "flux", "busy")
    _worker(client, "w4@b", None, "no_model")
    for worker in ("w1@a", "w3@b", "gone@c"):
        record = make_record(queue=model_queue("sdxl"))
        store.create(record)
        store.transition(record.id, JobStatus.RUNNING, worker=worker)
    client.zadd(WEBHOOK_RETRY_KEY, {"a": 1, "b": 2})
    client.rpush(WEBHOOK_QUEUE, "m1", "m2", "m3")
    client.rpush(f"{WEBHOOK_QUEUE}:3", "m4")

    stats = _read(client)

    assert stats.workers == {
        ("sdxl", "busy"): 1,
        ("sdxl", "ready"): 1,
        ("flux", "busy"): 1,
        (NO_MODEL, "no_model"): 1,
    }
    # By the model of the worker running it; a dead worker's job under "none".
    assert stats.running == {"sdxl": 1, "flux": 1, NO_MODEL: 1}
    assert stats.webhook_backlog == 6


def test_an_empty_cluster_reads_zeros(client: fakeredis.FakeRedis) -> None:
    stats = _read(client)
    assert set(stats.queued.values()) == {0}
    assert stats.workers == {}
    assert stats.running == {}
    assert stats.webhook_backlog == 0
