"""The Celery glue without a GPU: the generate task driven with a stand-in runner."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from shared.constants import GENERATE_TASK
from shared.workers import WorkerInfo, read_worker, worker_key
from tests.support.polling import wait_until
from worker.heartbeat import Heartbeat
from worker.tasks import WorkerRuntime, register

REPO = Path(__file__).resolve().parents[2]
WORKER = "tasks-test@host"


class StandInRunner:
    """Runs nothing: records which job's token woke it and, like JobRunner's on_start,
    marks the worker busy when it "claims" a job."""

    def __init__(self, heartbeat: Heartbeat, claims: bool = True, fails: bool = False):
        self.heartbeat = heartbeat
        self.claims = claims
        self.fails = fails
        self.job_ids: list[str] = []
        self.states_seen: list[str] = []
        self.jobs_done = 0

    def run_jobs(self, hand_queue: str | None = None, sender: str = "") -> int:
        self.job_ids.append(sender)
        if not self.claims:
            return 0  # the scheduler had nothing for it: nothing written
        self.heartbeat.update(state="busy", current_job=sender)
        self.states_seen.append(self.heartbeat.info.state)
        self.jobs_done += 1
        if self.fails:
            raise RuntimeError("the runner broke")
        return 1

    @property
    def busy(self) -> bool:
        return False  # every job is recorded before run_jobs() returns

    def hand_back(self) -> None:
        """Nothing is prepared ahead."""

    def drain(self) -> None:
        """Nothing is handed over: every job is recorded before run_jobs() returns."""

    def close(self) -> None:
        """Nothing to stop."""


@pytest.fixture
def heartbeat(api_redis: redis.Redis) -> Iterator[Heartbeat]:
    # Started: the busy/ready flips are written by the heartbeat's own thread.
    beat = Heartbeat(api_redis, WorkerInfo(name=WORKER, state="ready"), ttl_s=60)
    beat.start()
    yield beat
    beat.stop()


def written_record(client: redis.Redis, **expected: object) -> WorkerInfo:
    """The worker record once it shows `expected` (its thread writes it soon after)."""

    def showing() -> WorkerInfo | None:
        record = read_worker(client, WORKER)
        matches = record is not None and all(getattr(record, k) == v for k, v in expected.items())
        return record if matches else None

    return wait_until(
        showing,
        10,
        0.01,
        what=lambda: f"worker record showing {expected} ({read_worker(client, WORKER)})",
    )


@pytest.fixture
def eager_app() -> Celery:
    app = Celery("tasks-test", set_as_current=False)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    return app


Drive = Callable[[WorkerRuntime, str], None]


@pytest.fixture
def drive(eager_app: Celery) -> Drive:
    """Register the task for `runtime` on the eager app and send it one job id."""

    def send(runtime: WorkerRuntime, job_id: str) -> None:
        register(eager_app, runtime)
        eager_app.tasks[GENERATE_TASK].delay(job_id)

    return send


@pytest.mark.parametrize("module", ["worker.tasks", "worker.celery_app"])
def test_the_celery_glue_imports_without_torch(module: str) -> None:
    blocked = "import sys; sys.modules['torch'] = sys.modules['diffusers'] = None"
    result = subprocess.run(
        [sys.executable, "-c", f"{blocked}; import {module}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_task_runs_the_job_and_shows_the_worker_ready_again(
    drive: Drive, heartbeat: Heartbeat, api_redis: redis.Redis
) -> None:
    runner = StandInRunner(heartbeat)

    drive(WorkerRuntime(heartbeat, runner), "job-1")

    assert runner.job_ids == ["job-1"]
    assert runner.states_seen == ["busy"]
    record = written_record(api_redis, state="ready", jobs_done=1)
    assert record.current_job is None


def test_a_token_with_nothing_to_run_leaves_the_worker_record_untouched(
    drive: Drive, heartbeat: Heartbeat, api_redis: redis.Redis
) -> None:
    runner = StandInRunner(heartbeat, claims=False)
    before = heartbeat.info
    api_redis.delete(worker_key(WORKER))  # any write would bring it back

    drive(WorkerRuntime(heartbeat, runner), "someone-elses")

    assert runner.job_ids == ["someone-elses"]
    assert heartbeat.info is before
    assert read_worker(api_redis, WORKER) is None


def test_a_runner_that_raises_still_leaves_the_worker_ready(
    drive: Drive, heartbeat: Heartbeat
) -> None:
    runner = StandInRunner(heartbeat, fails=True)

    with pytest.raises(RuntimeError, match="the runner broke"):
        drive(WorkerRuntime(heartbeat, runner), "job-2")

    assert heartbeat.info.state == "ready"
    assert heartbeat.info.jobs_done == 1


def test_a_worker_without_a_runner_refuses_the_job(drive: Drive, heartbeat: Heartbeat) -> None:
    with pytest.raises(RuntimeError, match="no model loaded"):
        drive(WorkerRuntime(heartbeat, runner=None), "job-3")
