"""Dynamic batching through the whole stack: API -> Redis -> a batching worker -> S3 -> webhooks.

The worker serves `tiny-batch` (max_batch_size 4, batch_window 0.5 s): the
flaky test pipeline, which logs each pipeline call to Redis so the test can
count them.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from shared.constants import model_queue
from tests.e2e.helpers import download_png, submit, wait_for
from tests.support.pipelines import pipeline_calls
from tests.support.polling import wait_until
from tests.support.processes import WorkerProcess, start_worker
from tests.support.receiver import Receiver

PIXEL_TOLERANCE = 3
SEEDS = [21, 22, 23, 24]


@pytest.fixture(scope="module")
def batch_worker(
    e2e_env: dict[str, str], e2e_redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    worker = start_worker(
        "e2e-batch@test",
        {**e2e_env, "WORKER_MODEL": "tiny-batch"},
        tmp_path_factory.mktemp("batch-worker-logs"),
        e2e_redis_url,
    )
    yield worker
    worker.stop(signal.SIGTERM)


def pixels(url: str) -> np.ndarray:
    return np.asarray(download_png(url)[1].convert("RGB"), dtype=np.int16)


def test_a_burst_shares_pipeline_calls_and_each_job_keeps_its_own_result(
    client: TestClient,
    batch_worker: WorkerProcess,
    webhook_worker: Any,
    receiver: Receiver,
    e2e_redis_url: str,
) -> None:
    calls_redis = redis.Redis.from_url(e2e_redis_url)

    def job(seed: int, **extra: Any) -> dict[str, Any]:
        body = {"prompt": f"e2e burst {seed}", "model": "tiny-batch", "seed": seed, **extra}
        return submit(client, **body)

    # Each job alone first (submitted one after the other: nothing to batch with).
    alone = {seed: wait_for(client, job(seed)["id"]) for seed in SEEDS}
    assert all(j["status"] == "succeeded" and j["batch_size"] == 1 for j in alone.values())
    assert len(pipeline_calls(calls_redis, "e2e burst")) == len(SEEDS)

    # Then the same jobs as a burst, each with its own webhook.
    hooks = {seed: receiver.url(f"/batch-{seed}") for seed in SEEDS}
    burst = [job(seed, webhook=hooks[seed])["id"] for seed in SEEDS]
    done = {seed: wait_for(client, job_id) for seed, job_id in zip(SEEDS, burst, strict=True)}

    calls = pipeline_calls(calls_redis, "e2e burst")[len(SEEDS) :]
    assert 1 <= len(calls) < len(SEEDS), calls  # fewer calls than jobs
    assert sorted(p for call in calls for p in call) == [f"e2e burst {s}" for s in SEEDS]
    for seed in SEEDS:
        batched = done[seed]
        assert batched["status"] == "succeeded", batched["error"]
        assert batched["worker"] == "e2e-batch@test"
        assert batched["model_used"] == "tiny-batch"
        assert batched["batch_size"] > 1
        [image] = batched["images"]
        assert image["seed"] == seed
        difference = np.abs(pixels(image["url"]) - pixels(alone[seed]["images"][0]["url"]))
        assert difference.max() <= PIXEL_TOLERANCE, (seed, difference.max())
        # One completed webhook per job, about that job.
        [call] = receiver.wait_for(f"/batch-{seed}", 1)
        event = json.loads(call.body)
        assert event["type"] == "job.completed"
        assert event["data"]["id"] == batched["id"]
        assert event["data"]["status"] == "succeeded"

    # Every job's wake-up token is spent (docs/scheduling.md): none is left on the
    # queue's list to wake a worker for nothing, and no job ran again.
    wait_until(
        lambda: calls_redis.llen(model_queue("tiny-batch")) == 0,
        what="the burst's tokens to be spent",
    )
    assert len(pipeline_calls(calls_redis, "e2e burst")) == len(SEEDS) + len(calls)


def test_a_failing_job_in_a_burst_fails_alone(
    client: TestClient, batch_worker: WorkerProcess
) -> None:
    jobs = [
        submit(client, prompt=prompt, model="tiny-batch", seed=3)
        for prompt in ("e2e mixed ok 1", "e2e mixed raise", "e2e mixed ok 2")
    ]
    done = [wait_for(client, j["id"]) for j in jobs]

    assert [j["status"] for j in done] == ["succeeded", "failed", "succeeded"]
    assert done[1]["error"]["type"] == "generation_error"
    assert all(len(j["images"]) == 1 for j in (done[0], done[2]))


def test_the_worker_record_lists_the_batch_it_is_running(
    client: TestClient, batch_worker: WorkerProcess
) -> None:
    ids = [
        submit(client, prompt=f"e2e slow batch {i}", model="tiny-batch", steps=10)["id"]
        for i in range(3)
    ]

    def worker_record() -> dict[str, Any]:
        workers = client.get("/status").json()["workers"]
        [record] = [w for w in workers if w["name"] == batch_worker.name]
        return record  # type: ignore[no-any-return]

    record = wait_until(
        lambda: (found := worker_record())["current_batch"] and found,
        30,
        what="the batch on the worker record",
    )
    # All three, unless the first job's window closed before the others arrived.
    assert set(record["current_batch"]) <= set(ids)
    assert len(record["current_batch"]) >= 2
    assert record["current_job"] in record["current_batch"]
    assert record["state"] == "busy"

    assert all(wait_for(client, job_id)["status"] == "succeeded" for job_id in ids)
    [record] = [
        w for w in client.get("/status").json()["workers"] if w["name"] == batch_worker.name
    ]
    assert record["current_batch"] == []
    assert record["state"] == "ready"
