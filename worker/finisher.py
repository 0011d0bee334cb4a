"""Record how jobs ended on a thread of their own, while the next job denoises.

Once a job's pipeline call returns, what is left is I/O and encoding: PNG
encode, the storage write, the success transition, the webhook event. Done in
line, the GPU waits for all of it; here the worker hands it over and takes its
next job at once.

Nothing is lost by returning early: the job stays in the running index under
this worker until its terminal status is written, so if the process dies
before that, the reaper hands it back to the queue (its Celery message may
already be acknowledged); and it is `succeeded` only once its images are stored.
At most one finished job waits here beside the one being recorded: a slow store
slows the worker down rather than piling up images in memory.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from shared.logs import log_context

log = logging.getLogger(__name__)

Task = Callable[[], object]


class Finisher:
    def __init__(self, waiting: int = 1) -> None:
        self._tasks: queue.Queue[tuple[str, Task]] = queue.Queue(maxsize=waiting)
        self._thread = threading.Thread(target=self._loop, name="finisher", daemon=True)
        self._thread.start()

    def submit(self, job_id: str, task: Task) -> None:
        """Run `task` (job `job_id`'s recording) soon; blocks while one already waits."""
        self._tasks.put((job_id, task))

    def drain(self) -> None:
        """Return once every submitted task ran (a worker stopping, a test checking)."""
        self._tasks.join()

    def _loop(self) -> None:
        while True:
            job_id, task = self._tasks.get()
            try:
                with log_context(job_id=job_id):
                    task()
            except Exception:
                log.exception("recording the outcome of job %s failed", job_id)
            finally:
                self._tasks.task_done()


class Stopwatch:
    """Seconds from its creation to stop() (to now, before that)."""

    def __init__(self) -> None:
        self._started = time.perf_counter()
        self._stopped: float | None = None

    def stop(self) -> None:
        self._stopped = time.perf_counter()

    @property
    def seconds(self) -> float:
        return (self._stopped or time.perf_counter()) - self._started
