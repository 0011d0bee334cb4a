"""The pipelined runner: a job's success is recorded on the finisher thread while the
next job runs, and until it is, the job stays claimed (the reaper would re-run it)."""

from __future__ import annotations

import threading
from pathlib import Path

import fakeredis
import pytest

from shared.constants import RUNNING_KEY
from shared.jobs import JobRecord, JobStatus, utcnow
from shared.storage import LocalStorage
from shared.store import JobStore
from tests.support.runners import TEST_QUEUE, make_runner
from tests.worker.test_inference import params, tiny  # noqa: F401  (tiny: a fixture)
from worker.finisher import Finisher
from worker.loader import LoadedModel


class GatedStorage(LocalStorage):
    """Writes wait until the test opens the gate: a slow object store."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "http://x")
        self.gate = threading.Event()

    def put(self, key: str, data: bytes, content_type: str) -> None:
        assert self.gate.wait(timeout=60), "the test never opened the gate"
        super().put(key, data, content_type)


def _job(store: JobStore, job_id: str) -> str:
    record = JobRecord(
        id=job_id, created_at=utcnow(), model="tiny-sd", queue=TEST_QUEUE, params=params(seed=1)
    )
    store.create(record)
    return job_id


@pytest.fixture
def store() -> JobStore:
    return JobStore(fakeredis.FakeRedis(), ttl_s=600)


def test_run_returns_before_the_images_are_stored_and_the_job_stays_claimed(
    tiny: LoadedModel,  # noqa: F811
    store: JobStore,
    tmp_path: Path,
) -> None:
    storage = GatedStorage(tmp_path)
    runner = make_runner(store, storage, tiny, finisher=Finisher())
    first, second = _job(store, "job-1"), _job(store, "job-2")

    # Both generated; the first one's outcome is being recorded (its store waits at
    # the gate) and the second waits its turn on the finisher.
    assert runner.run_jobs() == 2
    for job_id in (first, second):
        # Not stored yet: still running, still in the running index under its
        # worker, where the reaper finds it if this process dies now.
        assert store.get(job_id).status is JobStatus.RUNNING
        assert store.redis.hget(RUNNING_KEY, job_id) == b"w1@test"

    storage.gate.set()
    runner.drain()

    for job_id in (first, second):
        done = store.get(job_id)
        assert done.status is JobStatus.SUCCEEDED
        assert done.inference_s is not None
        assert done.inference_s > 0
        assert store.redis.hget(RUNNING_KEY, job_id) is None
        assert (tmp_path / f"jobs/{job_id}/0.png").is_file()


def test_without_a_finisher_outcomes_are_recorded_before_the_next_job(
    tiny: LoadedModel,  # noqa: F811
    store: JobStore,
    tmp_path: Path,
) -> None:
    runner = make_runner(store, LocalStorage(tmp_path, "http://x"), tiny)
    job_id = _job(store, "job-3")
    assert runner.run_jobs() == 1
    done = store.get(job_id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.inference_s is not None


def test_a_failed_recording_does_not_stop_the_finisher(caplog: pytest.LogCaptureFixture) -> None:
    finisher = Finisher()
    ran: list[str] = []

    def boom() -> None:
        raise OSError("disk full")

    finisher.submit("bad", boom)
    finisher.submit("good", lambda: ran.append("good"))
    finisher.drain()
    assert ran == ["good"]
    assert "recording the outcome of job bad failed" in caplog.text
