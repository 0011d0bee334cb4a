"""Run jobs: ask the scheduler, prepare ahead, claim at start, record the outcome.

One path for every job and every engine (docs/scheduling.md). While a job
denoises, the next one is reserved for this worker (still `queued`), its inputs
read, its prompt optimised and its call handed to the engine, which starts it
the moment the device is free; it is claimed (`queued -> running`) when the
engine says it started, and its outcome is recorded on the finisher thread
while the job after it runs. A batch is the same with several jobs in one call.

Leaves Celery to tasks.py, pipeline calls to engine.py, torch to inference.py,
the choice of job to the scheduler (shared.scheduler), claiming to claims.py,
when to stop to stopping.py, recording how a job ended to outcomes.py and
storing its images to storing.py (whose full spool turns new jobs away:
backpressure.py). A failed job is data, never a crashed worker.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from PIL import Image

from shared.cancel import cancels_requested
from shared.constants import DEFAULT_STORAGE_SPOOL_BYTES, DEFAULT_SWAP_AFTER_S, MODEL_QUEUE_PREFIX
from shared.jobs import GenerationParams, JobRecord
from shared.logs import log_context
from shared.previews import PreviewStore
from shared.registry import ModelEntry, Registry
from shared.scheduler import DEFAULT_CLAIM_TTL_S, Holding, Reservation, Scheduler
from shared.storage import Storage
from shared.store import JobStore
from worker import backpressure, failover, inference
from worker.batching import BatchPolicy, CompanionFinder, may_lead
from worker.call_types import StepCallback
from worker.claims import Claimer
from worker.devices import free_memory
from worker.engine import Call, InlineEngine, ProcessEngine
from worker.finisher import Finisher
from worker.loader import LoadedModel
from worker.metrics import BATCH_SIZE, INFERENCE, WORKER_BUSY, set_gpu_memory
from worker.models import ModelSet
from worker.outcomes import Outcomes, is_out_of_memory
from worker.png_metadata import PngMetadata
from worker.preview_watch import PreviewWatch
from worker.prompts import PromptOptimizer, optimized_batch_params
from worker.spool import Spool, spool_dir
from worker.stopping import (
    BatchMonitor,
    JobStopped,
    StepMonitor,
    TimeLimits,
    start_hard_limit,
)
from worker.storing import SHUTDOWN_WAIT_S, Storer

log = logging.getLogger(__name__)

BatchImages = list[list[Image.Image]]
Engine = InlineEngine | ProcessEngine

# How often a job waiting for the device looks whether a better one came
# (one GET of the scheduler's epoch; the scheduler is asked only when it moved).
OVERTAKE_POLL_S = 0.05


@dataclass
class Pending:
    """Jobs reserved for this worker and their call, submitted to the engine."""

    jobs: list[JobRecord]
    # Each job's share of the call (its optimised prompt, its inputs), in order.
    requests: list[inference.Request]
    call: Call
    # The model the call runs on.
    model: str

    @property
    def leader(self) -> JobRecord:
        return self.jobs[0]


@dataclass
class JobRunner:
    store: JobStore
    storage: Storage
    model: LoadedModel
    worker_name: str
    scheduler: Scheduler
    # The queues this worker consumes: where the scheduler looks for its jobs.
    queues: list[str]
    prompts: PromptOptimizer | None = None
    time_limits: TimeLimits = field(default_factory=TimeLimits)
    batching: BatchPolicy | None = None
    # Told the ids of the jobs about to run (one, or a batch) once they are claimed.
    on_start: Callable[[list[str]], None] | None = None
    # Told once no job is left running or being recorded here.
    on_idle: Callable[[], None] | None = None
    # Jobs this runner took to a terminal status (or tried to): the heartbeat's count.
    jobs_done: int = 0
    # Records outcomes on a thread of its own while the next job runs; without
    # one they are recorded before the next job is prepared.
    finisher: Finisher | None = None
    # Where pipeline calls run: a thread of this process (the default), or the
    # worker's engine process.
    engine: Engine | None = None
    # Stores images, through storage outages (the worker's, from its settings).
    storer: Storer | None = None
    # The registry, for the models other than `model` this worker serves (WORKER_MODELS).
    registry: Registry | None = None
    # Jobs that need a swap (docs/scheduling.md, "Models"): how much longer they may
    # wait than the ones that do not (MODEL_SWAP_AFTER_S), and how long reserving one
    # holds its model for this worker before its heartbeat does (WORKER_TTL_S).
    swap_after_s: float = DEFAULT_SWAP_AFTER_S
    claim_ttl_s: float = DEFAULT_CLAIM_TTL_S
    # The parameters written into each stored PNG (None: none, PNG_METADATA off).
    png_metadata: PngMetadata | None = None
    claims: Claimer = field(init=False, repr=False)
    outcomes: Outcomes = field(init=False, repr=False)
    _previews: PreviewStore = field(init=False, repr=False)
    handing_back: bool = field(default=False, init=False, repr=False)
    # Whether a run of jobs is in progress (an idle worker waits for a token).
    running_jobs: bool = field(default=False, init=False, repr=False)
    _active: int = field(default=0, init=False, repr=False)
    _active_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.claims = Claimer(self.store, self.model.name, self.worker_name)
        if self.storer is None:
            self.storer = Storer(
                self.storage,
                Spool(spool_dir(None, self.worker_name), DEFAULT_STORAGE_SPOOL_BYTES),
                canceled=functools.partial(cancels_requested, self.store.redis),
            )
        self.outcomes = Outcomes(self.store, self.storer, self.model.name, self.png_metadata)
        self._previews = PreviewStore(self.store.redis)
        if self.engine is None:
            self.engine = InlineEngine(ModelSet.holding(self.model))

    @property
    def busy(self) -> bool:
        """Whether a job claimed here is still running or being recorded."""
        return self._active > 0

    def run_jobs(self, hand_queue: str | None = None, sender: str = "") -> int:
        """Run jobs for as long as the scheduler has some for this worker; how many
        were started. `hand_queue`: the queue of the wake-up token that woke it;
        `sender`: the job that token was sent for (whichever job runs)."""
        if self._storer.full:
            backpressure.turn_away(self.store.redis, hand_queue, self._storer, sender)
            backpressure.wait_for_room(self._storer, lambda: self.handing_back)
            return 0
        self.running_jobs = True
        started = 0
        try:
            pending = self._prepare_next(hand_queue)
            while pending is not None:
                if self._wait_for_device(pending):
                    started += self._begin(pending)
                if self.handing_back or self._storer.full:
                    break
                pending = self._prepare_next(None)
        finally:
            self.running_jobs = False
        return started

    def hand_back(self) -> None:
        """Start no job prepared ahead from now on (the worker is stopping)."""
        self.handing_back = True

    # --- choosing and preparing ---------------------------------------------------

    def _prepare_next(self, hand_queue: str | None) -> Pending | None:
        """Reserve this worker's next job (and batch companions), read what it needs
        and submit its call; None when the scheduler has nothing for it now."""
        while not self.handing_back:
            reservation = self._reserve(hand_queue)
            hand_queue = None  # the token in hand paid for the first reservation
            if reservation is None:
                return None
            leader = reservation.record
            model = self._model_for(leader)
            jobs = [leader, *self._companions(leader, model)]
            with log_context(job_id=leader.id):
                pending = self._submit(jobs, model)
            if pending is not None:
                return pending
        return None

    def _reserve(self, hand_queue: str | None) -> Reservation | None:
        holding = self._holding()
        return failover.retrying(
            lambda: self.scheduler.reserve(self.worker_name, self.queues, hand_queue, holding),
            "asking the scheduler for the next job",
        )

    def _holding(self) -> Holding:
        """The models on this worker's device and warm in its host memory."""
        tiers = self._engine.tiers or {self.model.name: "device"}
        return Holding.of_tiers(tiers, self.swap_after_s, self.claim_ttl_s, self._engine.adapters)

    def _model_for(self, record: JobRecord) -> str:
        """The model a job runs on: the one it names, else (a job of the shared queue)
        the one this worker used last."""
        if record.queue.startswith(MODEL_QUEUE_PREFIX):
            return record.model
        return self._engine.current or self.model.name

    def _companions(self, leader: JobRecord, model: str) -> list[JobRecord]:
        """Queued jobs that can share the leader's call, reserved for it (batching)."""
        if self.batching is None or not may_lead(leader, self.batching):
            return []
        finder = CompanionFinder(
            self.store,
            self.scheduler,
            self.queues,
            self.batching,
            lambda r: self._model_for(r) == model,
        )
        return finder.gather(leader, self.worker_name, lambda: self._engine.busy)

    def _entry(self, model: str) -> ModelEntry:
        if self.registry is not None and model in self.registry.models:
            return self.registry.models[model]
        return self.model.entry

    def _submit(self, jobs: list[JobRecord], model: str) -> Pending | None:
        """Prepare each job's share of the call and submit it; a job whose inputs
        cannot be read fails at once (the others go on without it)."""
        max_tokens = self._entry(model).params.max_tokens
        # A batch's prompts are optimised at once: it waits for the slowest answer.
        optimized = optimized_batch_params(self.prompts, self.store, jobs, max_tokens)
        requests, ready = [], []
        for record, params in zip(jobs, optimized, strict=True):
            try:
                requests.append(self._request(record, params, model))
                ready.append(record)
            except Exception as exc:  # noqa: BLE001 -- a job's failure is data
                self._fail_unprepared(record, exc, model)
        if not ready:
            return None
        call = self._engine.submit(requests, cancel_ids=tuple(r.id for r in ready))
        return Pending(ready, requests, call, model)

    def _request(
        self, record: JobRecord, params: GenerationParams, model: str
    ) -> inference.Request:
        """A job's share of a pipeline call: its (optimised) parameters, its inputs, its model."""
        return inference.Request(params, self._init_image(record), self._mask(record), model)

    def _fail_unprepared(self, record: JobRecord, exc: Exception, model: str) -> None:
        running = self.claims.claim_queued(record, model)
        if running is None:
            return
        self.mark_started([running.id])
        try:
            self.outcomes.fail(running, exc)
        finally:
            self.mark_finished(1)

    # --- waiting for the device -----------------------------------------------------

    def _wait_for_device(self, pending: Pending) -> bool:
        """True once the engine started the call. While it waits, a job the scheduler
        now puts first (a higher priority, a key served less) takes its place, and a
        stopping worker lets its jobs go: False, the jobs given back to their queues.

        A call that starts within OVERTAKE_POLL_S costs no look at all; after that the
        scheduler is asked once, then again whenever its epoch moved."""
        epoch: int | None = None
        call = pending.call
        # A call can also end before it starts: its model would not load.
        while not call.started.wait(OVERTAKE_POLL_S) and not call.finished.is_set():
            if self.handing_back:
                return not self._let_go(pending, "the worker is stopping")
            current = self._epoch()
            if current is not None and current == epoch:
                continue
            epoch = current
            first = self._better(pending.leader)
            if first is not None and self._let_go(pending, f"{first} goes first"):
                return False
        return True

    def _let_go(self, pending: Pending, why: str) -> bool:
        """Withdraw a call that has not started and give its jobs back; False when it
        started meanwhile (it runs)."""
        if not self._engine.withdraw(pending.call):
            pending.call.started.wait()
            return False
        for record in pending.jobs:
            with contextlib.suppress(redis.RedisError):
                self.scheduler.release(record.id, self.worker_name, record.queue)
        log.info("job %s goes back to its queue: %s", pending.leader.id, why)
        return True

    def _epoch(self) -> int | None:
        try:
            return self.scheduler.epoch()
        except redis.RedisError:
            return None  # a failover: the prepared job keeps its turn

    def _better(self, record: JobRecord) -> str | None:
        try:
            return self.scheduler.better(record.id, self.worker_name, self.queues, self._holding())
        except redis.RedisError:
            return None

    # --- running ------------------------------------------------------------------------

    def _begin(self, pending: Pending) -> int:
        """Claim the jobs of a call the engine started and follow it to its outcome;
        how many were claimed. A job canceled or taken meanwhile is left out (its
        share of the call is thrown away); with none left the call is stopped."""
        claimed = (self.claims.claim_queued(r, pending.model) for r in pending.jobs)
        running = [r for r in claimed if r is not None]
        if not running:
            self._engine.stop(pending.call)
            return 0
        started = time.monotonic()
        self.mark_started([r.id for r in running])
        BATCH_SIZE.labels(pending.model).observe(len(running))
        monitors = [self._monitor(r) for r in running]
        batch = BatchMonitor(monitors, self.outcomes.stop) if len(running) > 1 else None
        pending.call.on_step = self._watch_previews(pending, running, batch or monitors[0])
        # The hard limit bounds generation only: storing the images afterwards is
        # bound by STORAGE_RETRY_S, and the deadline was checked at each step.
        label = ",".join(r.id for r in running)
        watchdog = start_hard_limit(label, self.time_limits.hard_s, pending.call.finished.is_set)

        def record_outcome() -> None:
            try:
                self._record(pending, running, batch, started)
            finally:
                watchdog.cancel()
                set_gpu_memory(self.model.plan.device, self.gpu_memory())
                self.mark_finished(len(running))

        if self.finisher is None:
            record_outcome()
        else:
            self.finisher.submit(running[0].id, record_outcome)
        return len(running)

    def _watch_previews(
        self, pending: Pending, running: list[JobRecord], on_step: StepCallback
    ) -> StepCallback:
        """`on_step`, following who watches the call's jobs (live previews), and the
        previews the engine makes of them stored as they come."""
        if not self._engine.makes_previews:
            return on_step
        ids = {record.id for record in running}
        watch = PreviewWatch(
            self.store.redis,
            self._engine,
            pending.call,
            [job.id if job.id in ids else None for job in pending.jobs],
            pending.model,
            self._previews,
        )
        pending.call.on_preview = watch.keep
        watch.check()
        return watch.following(on_step)

    def _monitor(self, record: JobRecord) -> StepMonitor:
        # With the engine process, cancels are checked there, between two steps.
        return StepMonitor(
            self.store,
            record,
            self.time_limits.soft_s,
            check_cancel=not self._engine.checks_cancels,
        )

    def _record(
        self,
        pending: Pending,
        running: list[JobRecord],
        batch: BatchMonitor | None,
        started: float,
    ) -> None:
        """The outcome of each claimed job of a finished call, recorded."""
        call = pending.call
        try:
            images = call.result()
        except JobStopped as stop:
            if batch is None:
                self.outcomes.stop(running[0], stop)
            return  # a batch's stopped jobs were each recorded as they stopped
        except Exception as exc:  # noqa: BLE001 -- a job's failure is data
            self._failed_call(pending, running, batch, exc)
            return
        finally:
            if call.seconds is not None:
                INFERENCE.labels(pending.model).observe(call.seconds)
        self._note_rate(pending.model, running, call.seconds)
        by_id = dict(zip((r.id for r in pending.jobs), images, strict=True))
        stopped = batch.stopped if batch is not None else {}
        for record in running:
            if record.id not in stopped:
                self.outcomes.succeed(record, by_id[record.id], started, len(running), call.seconds)

    def _failed_call(
        self,
        pending: Pending,
        running: list[JobRecord],
        batch: BatchMonitor | None,
        failure: Exception,
    ) -> None:
        if batch is None:
            self.outcomes.fail(running[0], failure)
            return
        # One bad job (or a batch too large for the GPU) must not fail the others:
        # each job still running gets a pipeline call of its own.
        if is_out_of_memory(failure):
            free_memory()
        log.warning(
            "batch of %d jobs failed (%s: %s); running each job alone",
            len(running),
            type(failure).__name__,
            str(failure)[:300],
        )
        requests = dict(zip((r.id for r in pending.jobs), pending.requests, strict=True))
        for record in batch.active:
            self._run_alone(record, requests[record.id])

    def _run_alone(self, record: JobRecord, request: inference.Request) -> None:
        """Run one claimed job in a call of its own, waiting for it (a failed batch):
        its prompt as already optimised, its inputs as already read."""
        started = time.monotonic()
        with log_context(job_id=record.id):
            try:
                call = self._engine.submit([request], self._monitor(record), (record.id,))
                (images,) = call.result()
            except JobStopped as stop:
                self.outcomes.stop(record, stop)
                return
            except Exception as exc:  # noqa: BLE001 -- a job's failure is data
                self.outcomes.fail(record, exc)
                return
            self.outcomes.succeed(record, images, started, 1, call.seconds)

    def _note_rate(self, model: str, running: list[JobRecord], seconds: float | None) -> None:
        """The model's measured seconds per cost unit, for the ETAs of queued jobs."""
        if seconds is None:
            return
        with contextlib.suppress(redis.RedisError):
            self.scheduler.note_rate(model, seconds, sum(r.cost for r in running))

    # --- bookkeeping ------------------------------------------------------------------

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

    def drain(self) -> None:
        """Wait until every handed-over outcome is recorded (the worker is stopping)."""
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

    def gpu_memory(self) -> dict[str, int] | None:
        """The CUDA memory of the process that holds the model (None off CUDA)."""
        return self._engine.gpu_memory()

    @property
    def _engine(self) -> Engine:
        assert self.engine is not None  # set in __post_init__
        return self.engine

    @property
    def _storer(self) -> Storer:
        assert self.storer is not None  # set in __post_init__
        return self.storer

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
