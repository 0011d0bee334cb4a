"""The runner on an engine process: the next job is prepared while one denoises, and
claimed only once the engine starts it. Until then it is an ordinary queued job:
it keeps its queue position, a higher-priority job goes first, a cancel means it
never runs, and a stopping worker hands it back."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from shared.held import held_jobs
from shared.jobs import JobRecord, JobStatus, utcnow
from shared.storage import LocalStorage
from shared.store import JobStore
from tests.support.pipelines import pipeline_calls, steps_key
from tests.support.polling import wait_until
from tests.worker.conftest import flaky_params
from worker.engine import ProcessEngine
from worker.finisher import Finisher
from worker.loader import LoadedModel
from worker.runner import JobRunner
from worker.stopping import JobHandedBack

QUEUE = "darkroom.model.tiny-flaky"


@pytest.fixture
def store(engine_redis: redis.Redis) -> Iterator[JobStore]:
    yield JobStore(engine_redis, ttl_s=600)
    engine_redis.delete(*(engine_redis.keys("darkroom:*") or ["none"]))


@pytest.fixture
def runner(
    engine_and_model: tuple[ProcessEngine, LoadedModel], store: JobStore, tmp_path: Path
) -> Iterator[JobRunner]:
    engine, model = engine_and_model
    idle: list[int] = []
    runner = JobRunner(
        store,
        LocalStorage(tmp_path, "http://x"),
        model,
        "ahead@test",
        finisher=Finisher(),
        engine=engine,
        queues=[QUEUE],
        on_idle=lambda: idle.append(1),
    )
    yield runner
    runner.drain()
    engine.wait_idle()


def _job(store: JobStore, prompt: str, priority: str = "normal", steps: int = 2) -> str:
    job_id = f"job-{uuid.uuid4().hex[:8]}"
    record = JobRecord(
        id=job_id,
        created_at=utcnow(),
        model="tiny-flaky",
        queue=QUEUE,
        priority=priority,
        params=flaky_params(prompt, steps=steps),
    )
    store.create(record)
    return job_id


def _in_thread(run: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Run `run` on a thread (a Celery task waiting for the device); its result or error."""
    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(run())
        except Exception as exc:  # noqa: BLE001 -- the test looks at it
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _busy_with_slow_job(runner: JobRunner, store: JobStore, steps: int = 6) -> tuple[str, str]:
    """A slow job the engine is running: its id and prompt."""
    prompt = f"slow {uuid.uuid4().hex[:8]}"
    job_id = _job(store, prompt, steps=steps)
    assert runner.run(job_id) is JobStatus.RUNNING
    return job_id, prompt


def _prepared_behind_slow_job(
    runner: JobRunner, store: JobStore, prompt: str
) -> tuple[str, threading.Thread, list[object]]:
    """A job whose run (a Celery task) waits for the device behind a slow job: its
    id, the thread running it and what the run returns."""
    _busy_with_slow_job(runner, store)
    job_id = _job(store, prompt)
    thread, outcome = _in_thread(lambda: runner.run(job_id))
    return job_id, thread, outcome


def test_the_next_job_waits_queued_until_the_device_is_free_then_runs(
    runner: JobRunner, store: JobStore, engine_redis: redis.Redis
) -> None:
    first, prompt = _busy_with_slow_job(runner, store)
    assert runner.busy
    second = _job(store, "the next one")

    thread, outcome = _in_thread(lambda: runner.run(second))
    wait_until(lambda: engine_redis.llen(steps_key(prompt)) >= 2, timeout_s=30)

    # Prepared, not claimed: the first job is still denoising. The reaper knows
    # who holds its message.
    waiting = store.get(second)
    assert engine_redis.llen(steps_key(prompt)) < 6
    assert waiting.status is JobStatus.QUEUED
    assert waiting.started_at is None
    assert store.queue_position(waiting) == 0
    wait_until(lambda: held_jobs(engine_redis) == {second: "ahead@test"}, timeout_s=10)
    thread.join(timeout=60)
    assert outcome == [JobStatus.RUNNING]
    runner.drain()
    done = [store.get(first), store.get(second)]
    assert [r.status for r in done] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    assert done[1].started_at is not None
    assert done[1].inference_s is not None
    assert not runner.busy
    assert runner.jobs_done == 2
    assert held_jobs(engine_redis) == {}


def test_a_higher_priority_job_goes_before_the_one_prepared_ahead(
    runner: JobRunner, store: JobStore
) -> None:
    normal, thread, outcome = _prepared_behind_slow_job(runner, store, "normal, prepared ahead")
    urgent = _job(store, "urgent", priority="high")

    thread.join(timeout=60)
    runner.drain()

    assert outcome == [JobStatus.RUNNING]
    ran = {job_id: store.get(job_id) for job_id in (normal, urgent)}
    assert all(r.status is JobStatus.SUCCEEDED for r in ran.values())
    assert ran[urgent].started_at < ran[normal].started_at  # type: ignore[operator]
    # The urgent job's own message, when it comes, finds it done and is dropped.
    assert runner.run(urgent) is None


def test_a_job_canceled_while_prepared_ahead_is_never_claimed(
    runner: JobRunner, store: JobStore
) -> None:
    doomed, thread, outcome = _prepared_behind_slow_job(runner, store, "canceled while waiting")

    store.transition(doomed, JobStatus.CANCELED)  # what the API does to a queued job
    thread.join(timeout=60)

    assert outcome == [None]
    final = store.get(doomed)
    assert final.status is JobStatus.CANCELED
    assert final.started_at is None
    assert final.attempts == 0


def test_a_stopping_worker_hands_back_the_job_prepared_ahead(
    runner: JobRunner, store: JobStore, engine_redis: redis.Redis
) -> None:
    first, _ = _busy_with_slow_job(runner, store)
    marker = f"handed back {uuid.uuid4().hex[:8]}"
    second = _job(store, marker)
    thread, outcome = _in_thread(lambda: runner.run(second))

    runner.hand_back()
    thread.join(timeout=60)
    runner.drain()

    assert len(outcome) == 1
    assert isinstance(outcome[0], JobHandedBack)
    assert store.get(first).status is JobStatus.SUCCEEDED  # the running job finishes
    back = store.get(second)
    assert back.status is JobStatus.QUEUED
    assert back.attempts == 0
    assert pipeline_calls(engine_redis, marker) == []
    assert held_jobs(engine_redis) == {}
