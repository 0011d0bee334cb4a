"""Where pipeline calls run: in this process (InlineEngine) or in an engine process
of their own (ProcessEngine, the Celery worker's), fed one call ahead.

Both take a call (`submit`) while the one before it still runs, start it the
moment the device is free and report it through a `Call`: when it started,
each step, its images or its error. Until it starts, a submitted call can be
withdrawn, which is what lets the worker prepare the next job before the device
is free without claiming it early (worker.runner). The runner never asks which
engine it has.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing
import os
import queue
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from shared.settings import Settings
from worker import engine_process
from worker.call_types import Request, StepCallback
from worker.engine_process import Control, Work
from worker.metrics import (
    MODEL_SWAPS,
    model_gpu_memory,
    observe_model_load,
    set_models_resident,
)
from worker.stopping import JobStopped

if TYPE_CHECKING:  # torch and diffusers: the engine process's, not needed to launch it
    from PIL import Image

    from worker.loader import LoadedModel, LoadFailure
    from worker.models import ModelSet

log = logging.getLogger(__name__)

# The worker's exit status when its engine process died (EX_OSERR): its running
# job is in the running index under this worker and the job it reserved to run
# next in the scheduler's reservations, so the reaper hands both on.
ENGINE_LOST_EXIT_CODE = 71

BatchImages = list[list["Image.Image"]]
# Where a call's live previews go: (step, steps, {request index: WebPs}, seconds).
PreviewSink = Callable[[int, int, dict[int, list[bytes]], float], None]


@contextlib.contextmanager
def _no_main_module() -> Iterator[None]:
    """Start the engine without the program that started the worker: the spawn
    method imports the parent's __main__ in the child, which needs none of it
    (a script without a __main__ guard would run again there)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class Call:
    """One pipeline call submitted to the engine process, followed from this side."""

    def __init__(self, seq: int, on_step: StepCallback | None):
        self.seq = seq
        self.on_step = on_step
        self.started = threading.Event()
        self.finished = threading.Event()
        self.images: BatchImages | None = None
        self.error: Exception | None = None
        self.seconds: float | None = None
        # Set when on_step raised JobStopped: the call ends with it, images or not
        # (a cancel seen at the last step cancels the job).
        self.stop_reason: JobStopped | None = None
        # The worker stopped it (its jobs were taken from it): it ends with no images.
        self.stop_requested = False
        # Live previews: the requests someone watches (a bit each, the engine reads
        # it at each step; set through the engine's want_previews), and where the
        # previews go: (step, steps, {request index: WebPs}, seconds).
        self.preview_mask = 0
        self.on_preview: PreviewSink | None = None

    def result(self) -> BatchImages:
        """Wait for the call's images; raises JobStopped or the call's error."""
        self.finished.wait()
        if self.stop_reason is not None:
            raise self.stop_reason
        if self.error is not None:
            raise self.error
        if self.images is None:  # stopped by the worker (a claim lost), not by a monitor
            raise JobStopped(None)
        return self.images


class _CallBook:
    """The calls an engine took and has not finished: what both engines share."""

    def __init__(self) -> None:
        self._seqs = itertools.count(1)
        self._calls: dict[int, Call] = {}
        self._idle = threading.Condition()
        # The models the engine holds and where (worker.models); told on each change.
        self.tiers: dict[str, str] = {}
        self.on_models: Callable[[dict[str, str]], None] | None = None
        # The LoRA adapters loaded on the device (ids): the scheduler's adapter affinity.
        self.adapters: tuple[str, ...] = ()
        # Whether it makes live previews of the calls' watched jobs (PREVIEWS).
        self.makes_previews = False

    @property
    def current(self) -> str | None:
        """The model on the device used last (jobs of the shared queue run on it)."""
        on_device = [name for name, tier in self.tiers.items() if tier == "device"]
        return on_device[-1] if on_device else None

    def _models_changed(
        self, name: str, source: str, seconds: float, tiers: Mapping[str, str]
    ) -> None:
        """A model was loaded (or moved to the device) after start: count it, say it."""
        self.tiers = dict(tiers)
        observe_model_load(name, seconds, source)
        MODEL_SWAPS.labels(name).inc()
        set_models_resident(self.tiers)
        if self.on_models is not None:
            self.on_models(self.tiers)

    def submit(
        self,
        requests: list[Request],
        on_step: StepCallback | None = None,
        cancel_ids: tuple[str, ...] = (),
    ) -> Call:
        raise NotImplementedError

    def want_previews(self, call: Call, mask: int) -> None:
        """Make previews of the requests of `call` in `mask` (a bit per request index)."""
        call.preview_mask = mask

    def generate_batch(
        self,
        requests: list[Request],
        on_step: StepCallback | None = None,
        cancel_ids: tuple[str, ...] = (),
    ) -> BatchImages:
        return self.submit(requests, on_step, cancel_ids).result()

    @property
    def busy(self) -> bool:
        """Whether a call is running or waiting to."""
        with self._idle:
            return bool(self._calls)

    def wait_idle(self) -> None:
        """Return once no submitted call is left to run or finish."""
        with self._idle:
            self._idle.wait_for(lambda: not self._calls)

    def _register(self, on_step: StepCallback | None) -> Call:
        call = Call(next(self._seqs), on_step)
        with self._idle:
            self._calls[call.seq] = call
        return call

    def _forget(self, call: Call) -> None:
        with self._idle:
            self._calls.pop(call.seq, None)
            self._idle.notify_all()


class InlineEngine(_CallBook):
    """Pipeline calls on a thread of this process, on a model loaded here: the same
    calls as the engine process's (taken ahead, withdrawn until they start, stopped
    at a step), so the runner never asks which engine it has."""

    # The step callback checks cancels itself (between two steps, on the engine thread).
    checks_cancels = False

    def __init__(self, models: ModelSet, settings: Settings | None = None):
        super().__init__()
        self.models = models
        self._previews: Any = None
        if settings is not None and settings.previews:
            from worker.previews import PreviewMaker

            self._previews = PreviewMaker(settings.preview_interval_s)
            self.makes_previews = True
        self.tiers = dict(models.tiers())
        models.on_load = self._loaded
        self._work: queue.Queue[tuple[Call, list[Request]] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="engine", daemon=True)
        self._thread.start()

    @property
    def current(self) -> str | None:
        return self.models.current

    def gpu_memory(self) -> dict[str, int] | None:
        current = self.models.current
        return model_gpu_memory(self.models.get(current)) if current else None

    def submit(
        self,
        requests: list[Request],
        on_step: StepCallback | None = None,
        cancel_ids: tuple[str, ...] = (),
    ) -> Call:
        """Queue one pipeline call; it starts once the calls before it ended.
        (`cancel_ids` is for the engine process: here the step callback checks.)"""
        call = self._register(on_step)
        self._work.put((call, requests))
        return call

    def withdraw(self, call: Call) -> bool:
        """Take back a call that has not started: True if it never will."""
        with self._idle:
            if call.started.is_set() or self._calls.pop(call.seq, None) is None:
                return False
            self._idle.notify_all()
        call.finished.set()
        return True

    def stop(self, call: Call) -> None:
        """Stop `call` at its next step (it ends with no images)."""
        call.stop_requested = True

    def close(self) -> None:
        """Let the engine thread end once the calls submitted so far are done."""
        self._work.put(None)
        self._thread.join(timeout=30)

    def _serve(self) -> None:
        from worker import inference  # torch: only where calls run

        while (item := self._work.get()) is not None:
            call, requests = item
            if not self._waiting(call):
                continue  # withdrawn
            model = self._model_for(call, requests)
            if model is None:
                continue
            with self._idle:
                if call.seq not in self._calls:
                    continue  # withdrawn while its model loaded
                call.started.set()
            began = time.perf_counter()
            try:
                hook = self._preview_hook(model, call, requests)
                call.images = inference.generate_batch(model, requests, _stepper(call), hook)
            except _StoppedByWorker:
                pass  # no images, no reason: result() says the call was stopped
            except JobStopped as stop:
                call.stop_reason = stop
            except Exception as exc:  # noqa: BLE001 -- the call's error goes to its caller
                call.error = exc
            finally:
                call.seconds = time.perf_counter() - began
                self.adapters = self.models.adapter_ids()
                self._forget(call)
                call.finished.set()

    def _preview_hook(self, model: LoadedModel, call: Call, requests: list[Request]) -> Any:
        if self._previews is None:
            return None

        def sink(step: int, steps: int, images: dict[int, list[bytes]], seconds: float) -> None:
            if call.on_preview is not None:
                call.on_preview(step, steps, images, seconds)

        return self._previews.for_call(model, requests, lambda: call.preview_mask, sink)

    def _waiting(self, call: Call) -> bool:
        with self._idle:
            return call.seq in self._calls

    def _model_for(self, call: Call, requests: list[Request]) -> LoadedModel | None:
        """The call's model on the device (loaded first if need be: the call has not
        started meanwhile); None, the call ended with the error, when it will not load."""
        from shared.errors import ModelLoadError

        began = time.perf_counter()
        try:
            return self.models.get(requests[0].model or self.models.current or "")
        except ModelLoadError as exc:
            call.error = exc
            call.seconds = time.perf_counter() - began
            self._forget(call)
            call.finished.set()
            return None

    def _loaded(self, name: str, source: str, seconds: float, swap: bool) -> None:
        if swap:
            self._models_changed(name, source, seconds, self.models.tiers())
        else:
            observe_model_load(name, seconds, source)


class _StoppedByWorker(JobStopped):
    """The worker stopped the call (InlineEngine.stop), not its step callback."""


def _stepper(call: Call) -> StepCallback:
    """The call's step callback, which also ends a call the worker stopped."""

    def step(done: int, total: int) -> None:
        if call.stop_requested:
            raise _StoppedByWorker(None)
        if call.on_step is not None:
            call.on_step(done, total)

    return step


class ProcessEngine(_CallBook):
    """The worker's side of worker.engine_process: submits calls, reads what comes back."""

    # Each call stops at the first step after which its jobs are all canceled
    # (`cancel_ids`): checked there, as a round trip here would let a step more run.
    checks_cancels = True

    def __init__(self, settings: Settings, worker_name: str):
        super().__init__()
        context = multiprocessing.get_context("spawn")  # CUDA does not survive a fork
        self._requests: Any = context.Queue()
        self._events, child_events = context.Pipe(duplex=False)
        self._control = Control(
            lock=context.Lock(),
            started=context.RawValue("q", 0),
            withdrawn=context.RawValue("q", 0),
            stop=context.RawValue("q", 0),
            preview_seq=context.RawValue("q", 0),
            preview_mask=context.RawValue("q", 0),
        )
        self._process = context.Process(
            target=engine_process.main,
            args=(settings, worker_name, self._requests, child_events, self._control),
            name="darkroom-engine",
            daemon=True,
        )
        self._child_events = child_events
        # The models the engine may serve (WORKER_MODELS), once it started.
        self.allowed: list[str] = []
        self._closing = False
        self._gpu_memory: dict[str, int] | None = None
        self.makes_previews = settings.previews

    def launch(self) -> None:
        """Start the engine process; it loads the model meanwhile (see start())."""
        if self._process.pid is not None:
            return
        with _no_main_module():
            self._process.start()
        self._child_events.close()  # the child's end: EOF here once the child is gone

    def start(self) -> tuple[LoadedModel | None, list[LoadFailure]]:
        """Launch the engine process if not yet, and wait for its model: (the model
        without its pipelines, or None if none loaded; the models that failed)."""
        self.launch()
        try:
            kind, model, failures, load_times, memory, tiers, allowed = self._events.recv()
        except (EOFError, OSError):
            raise SystemExit(
                f"darkroom worker: the engine process died while loading the model "
                f"(exit code {self._process.exitcode})"
            ) from None
        assert kind == "loaded", kind
        for name, seconds in load_times:
            observe_model_load(name, seconds, "disk")
        self._gpu_memory = memory
        self.tiers, self.allowed = dict(tiers), list(allowed)
        set_models_resident(self.tiers)
        if model is not None:
            threading.Thread(target=self._read, name="engine-events", daemon=True).start()
        return model, failures

    def submit(
        self,
        requests: list[Request],
        on_step: StepCallback | None = None,
        cancel_ids: tuple[str, ...] = (),
    ) -> Call:
        """Queue one pipeline call; it starts once the calls before it ended. It stops
        after any step at which every job of `cancel_ids` is canceled."""
        call = self._register(on_step)
        self._requests.put(Work(call.seq, requests, cancel_ids))
        return call

    def withdraw(self, call: Call) -> bool:
        """Take back a call that has not started: True if it never will."""
        with self._control.lock:
            if self._control.started.value >= call.seq:
                return False
            self._control.withdrawn.value = call.seq
        self._forget(call)
        call.finished.set()
        return True

    def stop(self, call: Call) -> None:
        """Stop `call` at its next step (it ends with no images)."""
        self._control.stop.value = call.seq

    def want_previews(self, call: Call, mask: int) -> None:
        call.preview_mask = mask
        with self._control.lock:
            self._control.preview_seq.value = call.seq
            self._control.preview_mask.value = mask

    def gpu_memory(self) -> dict[str, int] | None:
        """The engine's CUDA memory as of its last call (asking torch.cuda here
        would make a CUDA context in this process for nothing)."""
        return self._gpu_memory

    def close(self) -> None:
        """Let the engine process end once the calls submitted so far are done."""
        self._closing = True
        self._requests.put(None)
        self._process.join(timeout=30)
        if self._process.is_alive():
            self._process.kill()

    def _read(self) -> None:
        while True:
            try:
                event = self._events.recv()
            except (EOFError, OSError):
                self._lost()
                return
            if event[0] == "model":
                self._models_changed(*event[1:])
                continue
            if event[0] == "adapters":
                self.adapters = tuple(event[1])
                continue
            call = self._calls.get(event[1])
            if call is not None:
                self._dispatch(call, event)

    def _dispatch(self, call: Call, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "started":
            call.started.set()
        elif kind == "step":
            self._step(call, event[2], event[3])
        elif kind == "preview":
            if call.on_preview is not None:
                try:
                    call.on_preview(*event[2:])
                except Exception:
                    log.exception("the previews of call %d were not stored", call.seq)
        else:
            call.seconds = event[2]
            if kind == "done":
                call.images = event[3]
                self._gpu_memory = event[4] or self._gpu_memory
            elif kind == "failed":
                call.error = event[3]
            self._forget(call)
            call.finished.set()

    def _step(self, call: Call, done: int, total: int) -> None:
        if call.on_step is None or call.stop_reason is not None:
            return
        try:
            call.on_step(done, total)
        except JobStopped as stop:
            call.stop_reason = stop
            self.stop(call)
        except Exception:
            log.exception("the step callback of call %d failed", call.seq)

    def _lost(self) -> None:
        if self._closing:
            return
        self._process.join(timeout=5)
        log.critical(
            "the engine process died (exit code %s): exiting the worker; "
            "the reaper hands its jobs to another worker",
            self._process.exitcode,
        )
        logging.shutdown()
        os._exit(ENGINE_LOST_EXIT_CODE)
