"""Celery glue: the generate task and the worker's lifecycle signals. Nothing of torch here.

A message is a wake-up token (docs/scheduling.md): the task asks the runner to
run jobs for as long as the scheduler has some for this worker, whichever job
the token was sent for. The runner comes from a `WorkerRuntime` the
celeryd_after_setup handler fills once the model is loaded (worker.boot, and
torch with it, are imported only then). A test hands it a stand-in.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from celery import Celery, Task
from celery.signals import (
    celeryd_after_setup,
    celeryd_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from shared.constants import GENERATE_TASK
from shared.jobs import utcnow
from shared.logs import set_process_context
from shared.settings import get_settings
from worker import metrics_server
from worker.heartbeat import Heartbeat

if TYPE_CHECKING:
    from worker.engine import ProcessEngine

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What the task needs of a runner: worker.runner.JobRunner, or a stand-in."""

    @property
    def jobs_done(self) -> int: ...

    @property
    def busy(self) -> bool: ...

    def run_jobs(self, hand_queue: str | None = None, sender: str = "") -> int: ...

    def hand_back(self) -> None: ...

    def drain(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class WorkerRuntime:
    """The worker's loaded parts; empty until the worker has started, no runner without a model."""

    heartbeat: Heartbeat | None = None
    runner: Runner | None = None
    # WORKER_ENGINE=process: the engine process, launched as the worker starts.
    engine: ProcessEngine | None = None
    # The worker's own queue, where its heartbeat wakes it (its tokens pay for nothing).
    private_queue: str | None = None


def register(app: Celery, runtime: WorkerRuntime) -> None:
    """Register the generate task on `app`, running jobs with `runtime`'s runner."""

    def generate(task: Task, job_id: str = "") -> None:
        # The token's queue: the list it was taken from (a job's id says only who sent it).
        queue = (task.request.delivery_info or {}).get("routing_key")
        run_jobs(runtime, None if queue == runtime.private_queue else queue, job_id)

    # Not shared: the task belongs to this app and runtime, not to every app made later
    # in the process (a test's app; the one boot.py makes to send webhook tasks).
    app.task(name=GENERATE_TASK, ignore_result=True, shared=False, bind=True)(generate)


def run_jobs(runtime: WorkerRuntime, hand_queue: str | None, sender: str = "") -> None:
    """Run jobs while the scheduler has some for this worker, then show it ready."""
    heartbeat, runner = runtime.heartbeat, runtime.runner
    if heartbeat is None or runner is None:
        # Should not happen: a worker with no model consumes no job queue.
        raise RuntimeError("this worker has no model loaded")
    try:
        # Marks the worker busy once it claimed a job (on_start).
        runner.run_jobs(hand_queue, sender)
    finally:
        # A run that found nothing wrote nothing; a job still denoising on the engine
        # or being recorded keeps the worker busy.
        if heartbeat.info.state == "busy" and not runner.busy:
            heartbeat.update_soon(
                state="ready", current_job=None, current_batch=[], jobs_done=runner.jobs_done
            )


def connect_signals(runtime: WorkerRuntime) -> None:
    """Fill `runtime` as the worker starts, announce it ready, take its record down at exit."""
    celeryd_init.connect(functools.partial(_launch_engine, runtime), weak=False)
    celeryd_after_setup.connect(functools.partial(_load_model, runtime), weak=False)
    worker_ready.connect(functools.partial(_announce_ready, runtime), weak=False)
    worker_shutting_down.connect(functools.partial(_hand_back, runtime), weak=False)
    worker_shutdown.connect(functools.partial(_stop_heartbeat, runtime), weak=False)


def _launch_engine(runtime: WorkerRuntime, sender: str, **_: Any) -> None:
    """Start the engine process (it imports torch and loads the model) at once, so
    that it does while Celery and this process start up."""
    settings = get_settings()
    if settings.worker_engine != "process":
        return
    from worker.engine import ProcessEngine

    runtime.engine = ProcessEngine(settings, sender)
    runtime.engine.launch()


def _load_model(runtime: WorkerRuntime, sender: str, instance: Any, **_: Any) -> None:
    """Preload the model before the worker consumes anything, then subscribe to its queues."""
    settings = get_settings()
    if settings.log_format == "json":
        from worker.library_logs import quiet_banner, route_library_logs

        quiet_banner(instance)
        route_library_logs()
    set_process_context(worker=sender)
    if settings.worker_metrics_port and not metrics_server.in_pool_child():
        # Before the model loads: a worker that is loading (or failed to) is scraped too.
        metrics_server.serve_or_exit(settings.worker_metrics_port)
    from worker import boot  # torch and diffusers: loaded by the worker process only

    # SystemExit (the worker's name is taken) passes through: the worker exits with it.
    context = boot.start_worker(sender, settings, runtime.engine)
    runtime.heartbeat, runtime.runner = context.heartbeat, context.runner
    runtime.private_queue = context.private_queue
    queues = instance.app.amqp.queues
    queues.select(context.consumed)


def _announce_ready(runtime: WorkerRuntime, **_: Any) -> None:
    if runtime.heartbeat is not None and runtime.runner is not None:
        runtime.heartbeat.update(state="ready", ready_at=utcnow().isoformat())


def _hand_back(runtime: WorkerRuntime, **_: Any) -> None:
    # A warm shutdown finishes the running job, not the one prepared behind it.
    if runtime.runner is not None:
        runtime.runner.hand_back()


def _stop_heartbeat(runtime: WorkerRuntime, **_: Any) -> None:
    if runtime.runner is not None:
        # The last jobs' images stored and successes written before the record
        # goes: a job still in the running index with no live worker is re-run.
        runtime.runner.close()
    if runtime.heartbeat is not None:
        runtime.heartbeat.stop()
