"""Celery glue: the generate task and the worker's lifecycle signals. Nothing of torch here.

The task runs jobs with the runner of a `WorkerRuntime` it is handed, which
the celeryd_after_setup handler fills once the model is loaded (worker.boot,
and torch with it, are imported only then). A test hands it a stand-in.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from celery import Celery
from celery.exceptions import Reject
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
from worker.stopping import JobHandedBack

if TYPE_CHECKING:
    from worker.engine import ProcessEngine

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What the task needs of a runner: worker.runner.JobRunner, or a stand-in."""

    @property
    def jobs_done(self) -> int: ...

    @property
    def busy(self) -> bool: ...

    def run(self, job_id: str) -> object: ...

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


def register(app: Celery, runtime: WorkerRuntime) -> None:
    """Register the generate task on `app`, running jobs with `runtime`'s runner."""

    def generate(job_id: str) -> None:
        try:
            run_job(runtime, job_id)
        except JobHandedBack:
            log.info("job %s was not started: its message goes back to the queue", job_id)
            raise Reject(requeue=True) from None

    # Not shared: the task belongs to this app and runtime, not to every app made later
    # in the process (a test's app; the one boot.py makes to send webhook tasks).
    app.task(name=GENERATE_TASK, ignore_result=True, shared=False)(generate)


def run_job(runtime: WorkerRuntime, job_id: str) -> None:
    """Run one job's message, then show the worker ready again if the job ran."""
    heartbeat, runner = runtime.heartbeat, runtime.runner
    if heartbeat is None or runner is None:
        # Should not happen: a worker with no model consumes no job queue.
        raise RuntimeError("this worker has no model loaded")
    try:
        runner.run(job_id)  # marks the worker busy once it claimed something (on_start)
    finally:
        # A dropped message (a batched companion's, a canceled job's) wrote nothing;
        # a job still denoising on the engine process keeps the worker busy.
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
    queues = instance.app.amqp.queues
    queues.select(context.queues)


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
