"""Dynamic batching in the runner: real Redis, real tiny pipelines, in this process.

The end-to-end version (a worker process behind the API) is tests/e2e/test_batching.py.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis
from PIL import Image

from api.params import resolve_params
from shared.cancel import request_cancel
from shared.constants import DEFAULT_QUEUE, model_queue
from shared.jobs import GenerationParams, JobCreate, JobRecord, JobStatus, utcnow
from shared.registry import Registry
from shared.storage import LocalStorage
from shared.store import JobStore
from tests.conftest import API_DB
from tests.support.pipelines import pipeline_calls, steps_key
from tests.support.polling import wait_until
from tests.support.runners import make_runner as runner_for
from tests.support.runners import run_one_call
from worker.batching import BatchKey, BatchPolicy, may_join, may_lead
from worker.loader import LoadedModel, load_model
from worker.runner import JobRunner

# Worst per-pixel difference (0-255) between a job's image from a batch and
# the same job run alone: a larger batch changes float rounding, not content.
PIXEL_TOLERANCE = 3


@pytest.fixture(scope="module")
def flaky(registry: Registry) -> LoadedModel:
    """The tiny model behind FlakyPipeline, which logs every call to Redis."""
    return load_model("tiny-batch", registry.models["tiny-batch"], registry.runtime.memory, "cpu")


@pytest.fixture(scope="module")
def tiny(registry: Registry) -> LoadedModel:
    return load_model("tiny-sd", registry.models["tiny-sd"], registry.runtime.memory, "cpu")


@pytest.fixture
def store(api_redis: redis.Redis, redis_base_url: str, monkeypatch: pytest.MonkeyPatch) -> JobStore:
    monkeypatch.setenv("REDIS_URL", f"{redis_base_url}/{API_DB}")  # FlakyPipeline's call log
    return JobStore(api_redis, ttl_s=600)


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "images", "http://x")


RunnerFactory = Callable[..., JobRunner]


@pytest.fixture
def make_runner(store: JobStore, storage: LocalStorage, flaky: LoadedModel) -> RunnerFactory:
    def make(
        max_images: int = 4, window_s: float = 0.0, model: LoadedModel | None = None
    ) -> JobRunner:
        model = model or flaky
        batching = BatchPolicy(max_images, window_s)
        return runner_for(store, storage, model, "batcher@test", batching=batching)

    return make


def queue_job(store: JobStore, model: LoadedModel, job_id: str, **request: object) -> JobRecord:
    body: dict[str, object] = {"prompt": f"batch {job_id}", "seed": 7, **request}
    params = resolve_params(JobCreate.model_validate(body), model.entry, None)
    record = JobRecord(
        id=job_id,
        created_at=utcnow(),
        model=model.name,
        queue=model_queue(model.name),
        params=params,
    )
    store.create(record)
    return record


def image_of(storage: LocalStorage, record: JobRecord, index: int = 0) -> np.ndarray:
    data = (storage.root / record.images[index].key).read_bytes()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def params(**overrides: object) -> GenerationParams:
    values: dict[str, object] = {
        "prompt": "a fox",
        "negative_prompt": None,
        "width": 64,
        "height": 64,
        "steps": 2,
        "guidance_scale": 7.5,
        "seed": 1,
        "num_images": 1,
    }
    return GenerationParams.model_validate({**values, **overrides})


def test_batch_key_separates_what_cannot_share_a_call() -> None:
    base = BatchKey.of(params())
    assert BatchKey.of(params(prompt="a different prompt", seed=99)) == base
    for change in (
        {"width": 128},
        {"height": 128},
        {"steps": 3},
        {"guidance_scale": 5.0},
        {"negative_prompt": "blurry"},
        {"mode": "img2img", "strength": 0.5},
    ):
        assert BatchKey.of(params(**change)) != base, change
    # strength only matters to img2img
    assert BatchKey.of(params(mode="img2img", strength=0.5)) != BatchKey.of(
        params(mode="img2img", strength=0.6)
    )


def test_only_fresh_queued_jobs_that_fit_may_join() -> None:
    def record(**changes: object) -> JobRecord:
        base = JobRecord(id="j", created_at=utcnow(), model="m", queue="q", params=params())
        return base.model_copy(update=changes)

    key = BatchKey.of(params())
    assert may_join(record(), key, room=1)
    assert not may_join(record(status=JobStatus.RUNNING), key, room=1)
    assert not may_join(record(attempts=1), key, room=1)  # handed back once: runs alone
    assert not may_join(record(cancel_requested=True), key, room=1)
    assert not may_join(record(deadline_at=utcnow()), key, room=1)
    assert not may_join(record(params=params(num_images=2)), key, room=1)
    assert may_join(record(params=params(num_images=2)), key, room=2)

    policy = BatchPolicy(max_images=4)
    assert may_lead(record(), policy)  # queued, never run
    assert not may_lead(record(attempts=1), policy)  # its worker may have died of it
    assert not may_lead(record(params=params(num_images=4)), policy)  # no room left
    assert not may_lead(record(), BatchPolicy(max_images=1))  # batching off


def test_a_burst_runs_in_one_call_with_the_images_each_job_gets_alone(
    store: JobStore,
    storage: LocalStorage,
    flaky: LoadedModel,
    make_runner: RunnerFactory,
    api_redis: redis.Redis,
) -> None:
    seeds = [11, 12, 13, 14]
    alone = make_runner(max_images=1)
    for seed in seeds:
        queue_job(store, flaky, f"alone-{seed}", prompt=f"burst fox {seed}", seed=seed)
        assert alone.run_jobs() == 1
    assert len(pipeline_calls(api_redis, "burst fox")) == 4

    for seed in seeds:
        queue_job(store, flaky, f"burst-{seed}", prompt=f"burst fox {seed}", seed=seed)
    runner = make_runner(max_images=4)
    assert runner.run_jobs() == 4

    calls = pipeline_calls(api_redis, "burst fox")
    assert len(calls) == 5  # the four alone, then one for the whole burst
    assert sorted(calls[-1]) == [f"burst fox {seed}" for seed in seeds]
    assert runner.jobs_done == 4
    for seed in seeds:
        batched, single = store.get(f"burst-{seed}"), store.get(f"alone-{seed}")
        assert batched.status is JobStatus.SUCCEEDED
        assert (batched.batch_size, single.batch_size) == (4, 1)
        assert batched.images[0].seed == seed
        assert batched.progress == 1.0
        difference = np.abs(image_of(storage, batched) - image_of(storage, single))
        assert difference.max() <= PIXEL_TOLERANCE, (seed, difference.max())
    # ...and the four jobs of the batch made four different images.
    first = image_of(storage, store.get("burst-11"))
    assert all(
        np.abs(image_of(storage, store.get(f"burst-{s}")) - first).mean() > 5 for s in seeds[1:]
    )

    # Nothing is left for the runner: no job runs twice.
    assert runner.run_jobs() == 0
    assert len(pipeline_calls(api_redis, "burst fox")) == 5


def test_batches_hold_at_most_max_batch_size_images_of_compatible_jobs(
    store: JobStore, flaky: LoadedModel, make_runner: RunnerFactory, api_redis: redis.Redis
) -> None:
    queue_job(store, flaky, "lead", prompt="cap lead", num_images=2)
    queue_job(store, flaky, "other-size", prompt="cap other size", width=128, height=128)
    queue_job(store, flaky, "other-steps", prompt="cap other steps", steps=3)
    queue_job(store, flaky, "too-many", prompt="cap too many", num_images=3)
    queue_job(store, flaky, "fits-1", prompt="cap fits 1")
    queue_job(store, flaky, "fits-2", prompt="cap fits 2")
    queue_job(store, flaky, "left-over", prompt="cap left over")

    assert run_one_call(make_runner(max_images=4)) == 3

    [call] = pipeline_calls(api_redis, "cap")
    # Two images of the leader, then the first compatible jobs in queue order.
    assert call == ["cap lead", "cap lead", "cap fits 1", "cap fits 2"]
    for job_id in ("lead", "fits-1", "fits-2"):
        assert store.get(job_id).batch_size == 3
    for job_id in ("other-size", "other-steps", "too-many", "left-over"):
        record = store.get(job_id)
        assert record.status is JobStatus.QUEUED
        assert store.queue_position(record) is not None
    assert store.queue_position(store.get("left-over")) == 3  # the only jobs left: 4


def test_the_window_waits_for_companions_that_arrive_late(
    store: JobStore, flaky: LoadedModel, make_runner: RunnerFactory, api_redis: redis.Redis
) -> None:
    queue_job(store, flaky, "early", prompt="window early")

    def submit_later() -> None:
        time.sleep(0.3)
        queue_job(store, flaky, "late", prompt="window late")

    later = threading.Thread(target=submit_later)
    later.start()
    # A window far longer than the test may run: only a batch that closes as soon
    # as it is full lets the runner return (no clock is read to decide).
    outcome: list[int] = []
    runner = threading.Thread(
        target=lambda: outcome.append(make_runner(max_images=2, window_s=600.0).run_jobs()),
        daemon=True,
    )
    runner.start()
    runner.join(timeout=120)
    later.join()

    assert not runner.is_alive(), "the full batch kept waiting for its window"
    assert outcome == [2]
    assert pipeline_calls(api_redis, "window") == [["window early", "window late"]]


def test_with_no_window_a_lone_job_does_not_wait(
    store: JobStore, flaky: LoadedModel, make_runner: RunnerFactory, api_redis: redis.Redis
) -> None:
    queue_job(store, flaky, "lone", prompt="nowait lone")
    assert make_runner(max_images=4, window_s=0.0).run_jobs() == 1
    assert pipeline_calls(api_redis, "nowait") == [["nowait lone"]]
    assert store.get("lone").batch_size == 1


def test_a_failing_job_fails_alone_and_its_companions_succeed(
    store: JobStore, flaky: LoadedModel, make_runner: RunnerFactory, api_redis: redis.Redis
) -> None:
    queue_job(store, flaky, "good-1", prompt="mixed good 1")
    queue_job(store, flaky, "bad", prompt="mixed raise")
    queue_job(store, flaky, "good-2", prompt="mixed good 2")

    assert make_runner(max_images=4).run_jobs() == 3

    calls = pipeline_calls(api_redis, "mixed")
    # The batched call raised, then each job had a call of its own.
    assert calls == [
        ["mixed good 1", "mixed raise", "mixed good 2"],
        ["mixed good 1"],
        ["mixed raise"],
        ["mixed good 2"],
    ]
    bad = store.get("bad")
    assert bad.status is JobStatus.FAILED
    assert bad.error is not None
    assert "raised on purpose" in bad.error.message
    for job_id in ("good-1", "good-2"):
        good = store.get(job_id)
        assert good.status is JobStatus.SUCCEEDED
        assert good.images
        assert good.batch_size == 1


def test_canceling_one_job_mid_batch_stops_only_that_job(
    store: JobStore, flaky: LoadedModel, make_runner: RunnerFactory, api_redis: redis.Redis
) -> None:
    for name in ("a", "b", "c"):
        queue_job(store, flaky, f"slow-{name}", prompt=f"slow cancel {name}", steps=8)

    seen_when_canceled: dict[str, JobStatus] = {}

    def cancel_b() -> None:
        # Once a step of the batched call finished, all three jobs are in it.
        wait_until(lambda: api_redis.llen(steps_key("slow cancel a")), 60, 0.02, "a step")
        request_cancel(api_redis, "slow-b", ttl_s=60)
        wait_until(lambda: store.get("slow-b").status is JobStatus.CANCELED, 60, 0.02, "b canceled")
        seen_when_canceled.update({j: store.get(j).status for j in ("slow-a", "slow-c")})

    canceller = threading.Thread(target=cancel_b)
    canceller.start()
    assert make_runner(max_images=4).run_jobs() == 3
    canceller.join()

    assert len(pipeline_calls(api_redis, "slow cancel")) == 1
    # The cancel was recorded at once, while its companions were still generating,
    # not when the batch ended.
    assert seen_when_canceled == {"slow-a": JobStatus.RUNNING, "slow-c": JobStatus.RUNNING}
    canceled, survivors = store.get("slow-b"), [store.get("slow-a"), store.get("slow-c")]
    assert canceled.status is JobStatus.CANCELED
    assert canceled.images == []
    for survivor in survivors:
        assert survivor.status is JobStatus.SUCCEEDED
        assert len(survivor.images) == 1
        assert survivor.batch_size == 3


def test_canceling_every_job_stops_the_call(
    store: JobStore, flaky: LoadedModel, make_runner: RunnerFactory, api_redis: redis.Redis
) -> None:
    for name in ("a", "b"):
        queue_job(store, flaky, f"all-{name}", prompt=f"slow all {name}", steps=20)

    def cancel_both() -> None:
        while store.get("all-b").status is not JobStatus.RUNNING:
            time.sleep(0.02)
        for job_id in ("all-a", "all-b"):
            request_cancel(api_redis, job_id, ttl_s=60)

    canceller = threading.Thread(target=cancel_both)
    canceller.start()
    assert make_runner(max_images=4).run_jobs() == 2
    canceller.join()

    assert api_redis.llen(steps_key("slow all a")) < 20  # the call stopped before its 20 steps
    assert {store.get(j).status for j in ("all-a", "all-b")} == {JobStatus.CANCELED}


def test_a_job_handed_back_by_the_reaper_runs_alone(
    store: JobStore, flaky: LoadedModel, make_runner: RunnerFactory, api_redis: redis.Redis
) -> None:
    queue_job(store, flaky, "retried", prompt="isolate retried")
    store.update("retried", attempts=1)  # it was running on a worker that died
    queue_job(store, flaky, "fresh", prompt="isolate fresh")
    runner = make_runner(max_images=4)

    assert run_one_call(runner) == 1  # the retried job leads nothing
    assert store.get("retried").status is JobStatus.SUCCEEDED
    assert store.get("retried").attempts == 2
    assert store.get("fresh").status is JobStatus.QUEUED

    queue_job(store, flaky, "retried-2", prompt="isolate retried 2")
    store.update("retried-2", attempts=1)
    assert run_one_call(runner) == 1  # the fresh job leads, and it joins no batch
    assert store.get("fresh").status is JobStatus.SUCCEEDED
    assert store.get("retried-2").status is JobStatus.QUEUED
    assert pipeline_calls(api_redis, "isolate") == [["isolate retried"], ["isolate fresh"]]


def test_img2img_jobs_batch_with_their_own_init_images(
    store: JobStore, storage: LocalStorage, tiny: LoadedModel, make_runner: RunnerFactory
) -> None:
    def init_png(color: tuple[int, int, int]) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), color).save(buffer, format="PNG")
        return buffer.getvalue()

    def queue_i2i(job_id: str, color: tuple[int, int, int]) -> None:
        prompt = f"i2i {job_id.split('-')[1]}"  # the same job, alone and batched
        params = resolve_params(JobCreate(prompt=prompt, seed=5), tiny.entry, None)
        params = params.model_copy(update={"mode": "img2img", "strength": 0.6})
        record = JobRecord(
            id=job_id, created_at=utcnow(), model="tiny-sd", queue=DEFAULT_QUEUE, params=params
        )
        store.create(record, init_image=init_png(color))

    colors = {"red": (230, 20, 20), "blue": (20, 20, 230)}
    for name, color in colors.items():
        queue_i2i(f"alone-{name}", color)
        assert make_runner(max_images=1, model=tiny).run_jobs() == 1
    for name, color in colors.items():
        queue_i2i(f"batch-{name}", color)
    assert make_runner(max_images=4, model=tiny).run_jobs() == 2

    for name in colors:
        batched = store.get(f"batch-{name}")
        assert batched.batch_size == 2
        difference = np.abs(
            image_of(storage, batched) - image_of(storage, store.get(f"alone-{name}"))
        )
        assert difference.max() <= PIXEL_TOLERANCE
    # Each job kept its own init image: the red job's image is redder than the blue one's.
    red, blue = (
        image_of(storage, store.get("batch-red")),
        image_of(storage, store.get("batch-blue")),
    )
    assert red[..., 0].mean() - red[..., 2].mean() > blue[..., 0].mean() - blue[..., 2].mean()
