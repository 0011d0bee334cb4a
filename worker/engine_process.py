"""The engine process: holds the model and runs pipeline calls, nothing else.

On a GPU the pipeline call is the only work that uses the device; everything
around it (Celery, Redis, PNG encoding, storage, webhooks) is Python on the CPU.
Run in the same interpreter, that work holds the GIL the pipeline's Python
needs between kernel launches, so each job's recording slows the next job's
denoising. Here the model lives in a process of its own, fed by the worker
(worker.engine.ProcessEngine) through a queue: its loop only takes the next
request, runs it and sends the images back.

It may hold several models (worker.models.ModelSet): a request names the one
it runs on, loaded (or moved to the device) before its call starts.

Messages to the worker (one pipe): first ("loaded", the model without its
pipelines, the failures, seconds each load took, gpu memory, the models held);
then per request ("started", seq), ("step", seq, done, total), and one of
("done", seq, seconds, images, gpu memory), ("failed", seq, seconds,
exception), ("stopped", seq, seconds); ("preview", seq, step, steps, {request index: WebPs},
seconds) while the worker asks for previews of the call; ("model", name, source, seconds,
the models held) after each load once started; ("adapters", ids) when the LoRA
adapters loaded on the device changed.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from typing import Any

from shared.logs import configure_logging, log_context, set_process_context
from shared.settings import Settings

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Work:
    """One pipeline call: `requests` (worker.inference.Request), numbered `seq`.

    `cancel_ids`: jobs whose cancel flag stops the call after any step once all
    of them are canceled; checked here, between two steps, because a round trip
    to the worker would let one more step run.
    """

    seq: int
    requests: list[Any]
    cancel_ids: tuple[str, ...] = ()

    @property
    def model(self) -> str | None:
        """The model its requests run on (they share one); None: the one used last."""
        return getattr(self.requests[0], "model", None) if self.requests else None


@dataclass
class Control:
    """Shared with the worker: which request started, which one it withdrew, which
    one must stop, and which of a call's requests someone watches (`preview_seq`:
    the call; `preview_mask`: a bit per request). Ints in shared memory behind one
    lock (a start and a withdrawal of the same request exclude each other)."""

    lock: Any
    started: Any
    withdrawn: Any
    stop: Any
    preview_seq: Any = None
    preview_mask: Any = None

    def previews_wanted(self, seq: int) -> int:
        """The requests of call `seq` whose previews are wanted (a bit mask)."""
        if self.preview_seq is None:
            return 0
        with self.lock:
            return int(self.preview_mask.value) if self.preview_seq.value == seq else 0


class _Stopped(Exception):
    """The worker asked the running call to stop (its step callback raises this)."""


def main(
    settings: Settings,
    worker_name: str,
    requests: Queue[Work | None],
    events: Connection,
    control: Control,
) -> None:
    _die_with_parent()
    # The worker serves the metrics; what the engine measures travels in its
    # messages. Files of its own in the multiprocess directory would count it
    # as one more live worker process.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the worker, which stops us
    _log_like_the_worker(settings, worker_name)
    # The preview encoder's thread sends too: one message at a time on the pipe.
    events = _LockedSender(events)  # type: ignore[assignment]
    import torch

    from worker.models import model_set

    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    load_times: list[tuple[str, float]] = []
    started = False

    def report(name: str, source: str, seconds: float, swap: bool) -> None:
        if started:
            events.send(("model", name, source, seconds, models.tiers()))
        else:
            load_times.append((name, seconds))

    models, order = model_set(settings, report)
    loaded, failures = models.start(order)
    started = True
    described = None
    if loaded is not None:
        set_process_context(model=loaded.name)
        described = dataclasses.replace(
            loaded, txt2img=None, img2img=None, inpaint=None, adapters=None
        )
    events.send(
        (
            "loaded",
            described,
            failures,
            load_times,
            _gpu_memory(loaded),
            models.tiers(),
            models.allowed,
        )
    )
    if loaded is None:
        return
    previews = None
    if settings.previews:
        from worker.previews import PreviewMaker

        previews = PreviewMaker(settings.preview_interval_s)
    _serve(requests, models, events, control, CancelFlags(settings), previews)


def _serve(
    requests: Any,
    models: Any,
    events: Connection,
    control: Control,
    cancels: CancelFlags,
    previews: Any,
) -> None:
    """Run the calls as they come, each on its model; say which adapters the device
    holds whenever that changes (the scheduler's adapter affinity)."""
    adapters: tuple[str, ...] = ()
    while (work := requests.get()) is not None:
        if _withdrawn(work, control):
            continue
        with log_context(job_id=",".join(work.cancel_ids)):
            model = _model_for(work, models, events)
            if model is None:
                continue
            with control.lock:
                # Withdrawing a call withdraws any earlier one not started (there is
                # at most one: the worker submits the next call only once one started).
                if work.seq <= control.withdrawn.value:
                    continue
                control.started.value = work.seq
            events.send(("started", work.seq))
            _run(model, work, events, control, cancels, previews)
            if (held := models.adapter_ids()) != adapters:
                adapters = held
                events.send(("adapters", held))


def _withdrawn(work: Work, control: Control) -> bool:
    with control.lock:
        return bool(work.seq <= control.withdrawn.value)


def _model_for(work: Work, models: Any, events: Connection) -> Any:
    """The call's model on the device (loaded, or moved there, first: the job stays
    queued meanwhile); None, the call answered failed, when it will not load."""
    from shared.errors import ModelLoadError

    started = time.perf_counter()
    try:
        return models.get(work.model or models.current)
    except ModelLoadError as exc:
        events.send(("failed", work.seq, time.perf_counter() - started, exc))
        return None


class CancelFlags:
    """Reads jobs' cancel flags (shared.cancel) from Redis; best effort, like the
    worker's own checks: Redis away for a moment must not fail a computing job."""

    def __init__(self, settings: Settings):
        from shared.connections import redis_client

        self._client = redis_client(settings)

    def all_set(self, job_ids: tuple[str, ...]) -> bool:
        import redis

        from shared.cancel import cancel_requested

        try:
            return all(cancel_requested(self._client, job_id) for job_id in job_ids)
        except redis.RedisError:
            return False


class _LockedSender:
    """The pipe to the worker, for several threads: one message at a time."""

    def __init__(self, connection: Connection):
        self._connection = connection
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        with self._lock:
            self._connection.send(message)


def _run(
    model: Any,
    work: Work,
    events: Connection,
    control: Control,
    cancels: CancelFlags,
    previews: Any,
) -> None:
    from worker import inference
    from worker.devices import free_memory
    from worker.outcomes import is_out_of_memory

    def on_step(done: int, total: int) -> None:
        events.send(("step", work.seq, done, total))
        if control.stop.value == work.seq:
            raise _Stopped
        # After the last step the worker's monitor checks (the images are made by
        # then; the step event reaches it before the images do).
        if work.cancel_ids and done < total and cancels.all_set(work.cancel_ids):
            raise _Stopped

    def send_preview(step: int, steps: int, images: dict[int, list[bytes]], took: float) -> None:
        events.send(("preview", work.seq, step, steps, images, took))

    on_latents = None
    if previews is not None:  # worker.previews.PreviewMaker (PREVIEWS=on)
        wanted = functools.partial(control.previews_wanted, work.seq)
        on_latents = previews.for_call(model, work.requests, wanted, send_preview)
    started = time.perf_counter()
    try:
        images = inference.generate_batch(model, work.requests, on_step, on_latents)
    except _Stopped:
        events.send(("stopped", work.seq, time.perf_counter() - started))
    except Exception as exc:  # noqa: BLE001 -- the worker records it as the job's failure
        seconds = time.perf_counter() - started
        if is_out_of_memory(exc):
            free_memory()  # here, where the memory is
        events.send(("failed", work.seq, seconds, _picklable(exc)))
    else:
        seconds = time.perf_counter() - started
        events.send(("done", work.seq, seconds, images, _gpu_memory(model)))


def _picklable(exc: Exception) -> Exception:
    """`exc` if it survives the trip to the worker; else a RuntimeError saying what it was."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:  # noqa: BLE001 -- any pickling problem: send its text instead
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _log_like_the_worker(settings: Settings, worker_name: str) -> None:
    """The worker's log format (JSON lines too), its name on every line."""
    configure_logging(settings.log_level, settings.log_format)
    set_process_context(worker=worker_name)
    if settings.log_format == "json":
        from worker.library_logs import route_library_logs

        route_library_logs()


def _gpu_memory(model: Any) -> dict[str, int] | None:
    # Imported here: prometheus_client reads PROMETHEUS_MULTIPROC_DIR at import,
    # and main() drops it first.
    from worker.metrics import model_gpu_memory

    return model_gpu_memory(model)


def _die_with_parent() -> None:
    """Have the kernel kill this process when the worker dies (a hard-limit exit, a
    SIGKILL): an orphaned engine would hold the GPU's memory for nothing."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # the worker died before the line above took effect
