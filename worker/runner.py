"""Run a job (or a batch of them): claim, generate, record the outcome.

Leaves Celery to tasks.py, where pipeline calls run to engine.py, torch to
inference.py, claiming to claims.py, when to stop to stopping.py, recording
how a job ended to outcomes.py and storing its images to storing.py (whose
full spool turns new jobs away: backpressure.py). On an engine process a job
that runs alone goes through ahead.py (prepared while the job before it
denoises). A failed job is data (status failed, error type and message), never
a crashed worker.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from PIL import Image

from shared.cancel import cancels_requested
from shared.constants import DEFAULT_STORAGE_SPOOL_BYTES
from shared.jobs import GenerationParams, JobRecord, JobStatus
from shared.logs import log_context
from shared.storage import Storage
from shared.store import JobStore
from worker import backpressure, failover, inference
from worker.ahead import AheadRunner
from worker.batching import CompanionFinder, may_lead
from worker.claims import Claimer
from worker.devices import free_memory
from worker.engine import InlineEngine, ProcessEngine
from worker.finisher import Finisher, Stopwatch
from worker.loader import LoadedModel
from worker.metrics import BATCH_SIZE, INFERENCE, WORKER_BUSY, set_gpu_memory
from worker.outcomes import Outcomes, is_out_of_memory
from worker.prompts import PromptOptimizer, optimized_batch_params, optimized_params
from worker.spool import Spool, spool_dir
from worker.stopping import BatchMonitor, JobStopped, StepMonitor, TimeLimits, hard_limit
from worker.storing import SHUTDOWN_WAIT_S, Storer

log = logging.getLogger(__name__)

BatchImages = list[list[Image.Image]]
T = TypeVar("T")


@dataclass
class JobRunner:
    store: JobStore
    storage: Storage
    model: LoadedModel
    worker_name: str
    prompts: PromptOptimizer | None = None
    time_limits: TimeLimits = field(default_factory=TimeLimits)
    batching: CompanionFinder | None = None
    # Told the ids of the jobs about to run (one, or a batch) once they are claimed:
    # the worker record shows them. A message whose job is not ours never calls it.
    on_start: Callable[[list[str]], None] | None = None
    # Jobs this runner took to a terminal status (or tried to): the heartbeat's count.
    jobs_done: int = 0
    # Records successes on a thread of its own while the next job runs (the Celery
    # worker has one); without it they are recorded before run() returns.
    finisher: Finisher | None = None
    # Where pipeline calls run: this process (the default), or the worker's engine
    # process, which lets the next job be prepared while one denoises.
    engine: InlineEngine | ProcessEngine | None = None
    # Told once no job is left running or being recorded here.
    on_idle: Callable[[], None] | None = None
    # The queues this worker consumes: where a higher-priority job would wait.
    queues: list[str] = field(default_factory=list)
    # Stores images, through storage outages (the worker's, from its settings);
    # by default with the default retry window and a spool in the temp dir.
    storer: Storer | None = None
    _last_call_s: float | None = field(default=None, init=False, repr=False)
    claims: Claimer = field(init=False, repr=False)
    outcomes: Outcomes = field(init=False, repr=False)
    _active: int = field(default=0, init=False, repr=False)
    _active_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    handing_back: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self.claims = Claimer(self.store, self.model.name, self.worker_name)
        if self.storer is None:
            self.storer = Storer(
                self.storage,
                Spool(spool_dir(None, self.worker_name), DEFAULT_STORAGE_SPOOL_BYTES),
                canceled=functools.partial(cancels_requested, self.store.redis),
            )
        self.outcomes = Outcomes(self.store, self.storer, self.model.name)
        if self.engine is None:
            self.engine = InlineEngine(self.model)

    @property
    def busy(self) -> bool:
        """Whether a job claimed here is still running or being recorded."""
        return self._active > 0

    def run(self, job_id: str) -> JobStatus | None:
        """Run a job (and any companions batched with it) to a terminal status.

        Returns the job's status; None when it was not ours to run, or was turned
        away because the spool is full. With a finisher, a job whose images are
        still being stored is RUNNING, as is one whose images wait for storage;
        with an engine process, so is a job still denoising. Raises JobHandedBack
        when the worker stops before the job it prepared could start.
        """
        if self._storer.full:
            self._turn_away(job_id)
            return None
        if isinstance(self.engine, ProcessEngine):
            return self._run_on_process(job_id, self.engine)
        leader = self.claims.claim(job_id)
        return None if leader is None else self._run_claimed(leader)

    def hand_back(self) -> None:
        """Start no job prepared ahead from now on (the worker is stopping)."""
        self.handing_back = True

    def _turn_away(self, job_id: str) -> None:
        """The spool is full: the job goes back to its queue for another worker, and
        this task returns once there is room again (worker.backpressure)."""
        with log_context(job_id=job_id):
            backpressure.turn_away(self.store.redis, self.claims.queued(job_id), self._storer)
        backpressure.wait_for_room(self._storer, lambda: self.handing_back)

    def _run_claimed(self, leader: JobRecord) -> JobStatus:
        """Run a claimed job, with companions when its model batches, to the end."""
        batch = [leader]
        if self.batching is not None and may_lead(leader, self.batching.policy):
            batch += self.batching.gather(leader, self.claims.claim_queued)
        self.mark_started([r.id for r in batch])
        try:
            with log_context(job_id=leader.id):
                if len(batch) == 1:
                    statuses = {leader.id: self._run_alone(leader)}
                else:
                    statuses = self._run_batch(batch)
        finally:
            set_gpu_memory(self.model.plan.device, self.gpu_memory())
            self.mark_finished(len(batch))
        return statuses[leader.id]

    def _run_on_process(self, job_id: str, engine: ProcessEngine) -> JobStatus | None:
        current = self.claims.queued(job_id)
        if current is None:
            return None
        if self.batching is not None and may_lead(current, self.batching.policy):
            # A batch gathers its companions once the device is free: every job
            # queued by then can join it.
            engine.wait_idle()
            leader = self.claims.claim(job_id)
            return None if leader is None else self._run_claimed(leader)
        with log_context(job_id=job_id):
            return AheadRunner(self, engine).run(current)

    def prepare(self, record: JobRecord) -> inference.Request:
        """A job's share of a pipeline call: its (optimised) prompt, its inputs."""
        params = self._optimize_prompt(record)
        return inference.Request(params, self._init_image(record), self._mask(record))

    def mark_started(self, job_ids: list[str]) -> None:
        """Jobs claimed here are about to run: the worker is busy."""
        with self._active_lock:
            self._active += len(job_ids)
            WORKER_BUSY.set(1)
            if self.on_start is not None:
                self.on_start(job_ids)

    def mark_finished(self, jobs: int) -> None:
        """Jobs claimed here have been recorded: the worker is idle once none is left."""
        with self._active_lock:
            self.jobs_done += jobs
            self._active -= jobs
            if self._active == 0:
                WORKER_BUSY.set(0)
                if self.on_idle is not None:
                    self.on_idle()

    def _run_alone(self, record: JobRecord, params: GenerationParams | None = None) -> JobStatus:
        """Run one job; `params` when its prompt was already optimised (a failed batch)."""
        started = time.monotonic()
        with hard_limit(record.id, self.time_limits.hard_s):
            try:
                job_params = params or self._optimize_prompt(record)
                init_image = self._init_image(record)
                mask = self._mask(record)
                request = inference.Request(job_params, init_image, mask)
                with self._pipeline_call(1) as call:
                    monitor = StepMonitor(
                        self.store,
                        record,
                        self.time_limits.soft_s,
                        check_cancel=not self._engine.checks_cancels,
                    )
                    (images,) = self._generate([request], monitor, cancel_ids=(record.id,))
            except JobStopped as stop:
                return self.outcomes.stop(record, stop)
            except Exception as exc:  # noqa: BLE001 -- a job's failure is data; the worker serves on
                return self.outcomes.fail(record, exc)
        recorded = self._succeed(
            record.id, lambda: self.outcomes.succeed(record, images, started, 1, call.seconds)
        )
        return recorded or JobStatus.RUNNING

    def _succeed(self, job_id: str, record_success: Callable[[], T]) -> T | None:
        """Record a success now (its result), or on the finisher while the next job
        runs (None: not recorded yet)."""
        if self.finisher is None:
            return record_success()
        self.finisher.submit(job_id, record_success)
        return None

    def drain(self) -> None:
        """Wait until every handed-over success is recorded (the worker is stopping)."""
        if self.finisher is not None:
            self.finisher.drain()

    def close(self) -> None:
        """Record what is left, then stop the engine (the worker is exiting). Images
        storage has not taken are waited for up to SHUTDOWN_WAIT_S; their jobs are
        then left to the reaper."""
        self.drain()
        self._storer.close(SHUTDOWN_WAIT_S)
        if self.engine is not None:
            self.engine.close()

    def _generate(
        self,
        requests: list[inference.Request],
        on_step: inference.StepCallback,
        cancel_ids: tuple[str, ...] = (),
    ) -> BatchImages:
        return self._engine.generate_batch(requests, on_step, cancel_ids)

    def gpu_memory(self) -> dict[str, int] | None:
        """The CUDA memory of the process that holds the model (None off CUDA)."""
        return self._engine.gpu_memory()

    @property
    def _engine(self) -> InlineEngine | ProcessEngine:
        assert self.engine is not None  # set in __post_init__
        return self.engine

    @property
    def _storer(self) -> Storer:
        assert self.storer is not None  # set in __post_init__
        return self.storer

    def _run_batch(self, batch: list[JobRecord]) -> dict[str, JobStatus]:
        started = time.monotonic()
        log.info(
            "running %d jobs in one pipeline call (%d images): %s",
            len(batch),
            sum(r.params.num_images for r in batch),
            ", ".join(r.id for r in batch),
        )
        monitor = BatchMonitor(
            [StepMonitor(self.store, r, self.time_limits.soft_s) for r in batch], self.outcomes.stop
        )
        params: dict[str, GenerationParams] = {}
        try:
            images = self._call_batch(batch, monitor, params)
        except JobStopped:
            return monitor.stopped  # every job in the call stopped, each one recorded
        if isinstance(images, Exception):
            return self._run_each_alone(images, monitor, params)
        statuses = dict(monitor.stopped)
        done = [(r, imgs) for r, imgs in zip(batch, images, strict=True) if r.id not in statuses]
        call_s = self._last_call_s

        def record_batch() -> dict[str, JobStatus]:
            return {
                r.id: self.outcomes.succeed(r, imgs, started, len(batch), call_s)
                for r, imgs in done
            }

        recorded = self._succeed(batch[0].id, record_batch)
        statuses.update(recorded or {r.id: JobStatus.RUNNING for r, _ in done})
        return statuses

    def _call_batch(
        self, batch: list[JobRecord], monitor: BatchMonitor, params: dict[str, GenerationParams]
    ) -> BatchImages | Exception:
        """Each job's images from one pipeline call, or the error that failed the call.

        Fills `params` with each job's (optimised) parameters, for a re-run alone.
        """
        ids = [r.id for r in batch]
        with hard_limit(",".join(ids), self.time_limits.hard_s):
            try:
                params.update(zip(ids, self._optimize_prompts(batch), strict=True))
                requests = [inference.Request(params[r.id], self._init_image(r)) for r in batch]
                with self._pipeline_call(len(batch)):
                    return self._generate(requests, monitor)
            except JobStopped:
                raise
            except Exception as exc:  # noqa: BLE001 -- any failure: the jobs are run alone
                return exc

    def _run_each_alone(
        self, failure: Exception, monitor: BatchMonitor, params: dict[str, GenerationParams]
    ) -> dict[str, JobStatus]:
        # One bad job (or a batch too large for the GPU) must not fail the
        # others: each job still running gets a pipeline call of its own.
        if is_out_of_memory(failure):
            free_memory()
        log.warning(
            "batch of %d jobs failed (%s: %s); running each job alone",
            len(monitor.monitors),
            type(failure).__name__,
            str(failure)[:300],
        )
        alone = {r.id: self._run_alone(r, params.get(r.id)) for r in monitor.active}
        return {**monitor.stopped, **alone}

    @contextlib.contextmanager
    def _pipeline_call(self, jobs: int) -> Iterator[Stopwatch]:
        """Time one pipeline call (raised or not) and count the jobs that shared it."""
        BATCH_SIZE.labels(self.model.name).observe(jobs)
        watch = Stopwatch()
        try:
            yield watch
        finally:
            watch.stop()
            self._last_call_s = watch.seconds
            INFERENCE.labels(self.model.name).observe(watch.seconds)

    def _init_image(self, record: JobRecord) -> bytes | None:
        if record.params.mode == "txt2img":
            return None
        return failover.retrying(
            lambda: self.store.get_input(record.id), f"reading job {record.id}'s init image"
        )

    def _mask(self, record: JobRecord) -> bytes | None:
        if record.params.mode != "inpaint":
            return None
        return failover.retrying(
            lambda: self.store.get_mask(record.id), f"reading job {record.id}'s mask"
        )

    def _optimize_prompts(self, batch: list[JobRecord]) -> list[GenerationParams]:
        return optimized_batch_params(self.prompts, self.store, batch, self._max_tokens)

    def _optimize_prompt(self, record: JobRecord) -> GenerationParams:
        return optimized_params(self.prompts, self.store, record, self._max_tokens)

    @property
    def _max_tokens(self) -> int:
        return self.model.entry.params.max_tokens
