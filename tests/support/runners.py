"""A job runner as a worker builds it, for tests that drive it in this process."""

from __future__ import annotations

from typing import Any

from shared.constants import DEFAULT_QUEUE, model_queue
from shared.scheduler import Scheduler
from shared.storage import Storage
from shared.store import JobStore
from worker.loader import LoadedModel
from worker.runner import JobRunner

# The queue the unit tests put their jobs in when the model's own does not matter.
TEST_QUEUE = "q"


def make_runner(
    store: JobStore,
    storage: Storage,
    model: LoadedModel,
    worker: str = "w1@test",
    **options: Any,
) -> JobRunner:
    """A runner consuming the model's queue, the shared one and TEST_QUEUE."""
    queues = [model_queue(model.name), DEFAULT_QUEUE, TEST_QUEUE]
    scheduler = Scheduler(store.redis, store.half_life_s)
    return JobRunner(store, storage, model, worker, scheduler, queues, **options)


def run_one_call(runner: JobRunner) -> int:
    """Run the first pipeline call the scheduler gives `runner` (one job, or a batch),
    then stop as a warm shutdown does; how many jobs it started."""
    previous = runner.on_start

    def stop_after(job_ids: list[str]) -> None:
        runner.hand_back()
        if previous is not None:
            previous(job_ids)

    runner.on_start = stop_after
    try:
        return runner.run_jobs()
    finally:
        runner.on_start = previous
        runner.handing_back = False
