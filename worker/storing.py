"""A job's images into storage through an outage: stored now, or spooled and retried.

A storage failure must not fail a job whose generation is done. Its images go
to the worker's spool (worker.spool), and one thread retries the oldest
waiting job, backing off exponentially with jitter up to a cap, until
STORAGE_RETRY_S have passed since its first try; then the job fails with
`storage_error`, saying for how long storage was unreachable and the last
error. Jobs finished meanwhile join the line without a try of their own
(storage is known to be away), and are stored in order once it answers.

While its images wait the job stays `running`, claimed by this worker, so if
the worker dies the reaper re-runs it elsewhere. Its deadline and time limits
do not count: they bound generation, which is over. A cancel request seen
while it waits drops its images and ends it `canceled`: the client wants
nothing more, and nobody has seen the images.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from shared.constants import DEFAULT_STORAGE_RETRY_MAX_DELAY_S, DEFAULT_STORAGE_RETRY_S
from shared.errors import StorageError
from shared.jobs import JobStatus
from shared.storage import Storage
from worker.metrics import STORAGE_RETRIES
from worker.spool import Spool, SpooledImage
from worker.stopping import JobStopped

log = logging.getLogger(__name__)

# How a job's storing ended, told to it once: None (stored), StorageError (given
# up), JobStopped (canceled while it waited). Returns the status the job ends with.
Finish = Callable[[Exception | None], JobStatus]

# The worker's S3 client retries a request only once itself (boto3's default is
# 5 retries, about 8 s against a refused connection): longer outages are ridden
# out here, with the images safe in the spool instead of held in memory.
WORKER_S3_RETRIES = 1
# The first pause after a failed try; it doubles up to STORAGE_RETRY_MAX_DELAY_S.
FIRST_DELAY_S = 0.5
# How often the jobs waiting for storage are checked for a cancel request (one
# pipelined round trip for all of them).
CANCEL_POLL_S = 1.0
# A warm shutdown waits this long for waiting images, then leaves their jobs
# (still `running` under this worker) to the reaper, which re-runs them elsewhere
# once the worker's record is gone: long enough for a blip, short enough that a
# rollout during an outage does not stall on every worker.
SHUTDOWN_WAIT_S = 30.0


@dataclass(frozen=True)
class Upload:
    """One image to store under `key`."""

    key: str
    data: bytes
    content_type: str = "image/png"


@dataclass(frozen=True)
class RetryPolicy:
    window_s: float = DEFAULT_STORAGE_RETRY_S
    max_delay_s: float = DEFAULT_STORAGE_RETRY_MAX_DELAY_S
    first_delay_s: float = FIRST_DELAY_S

    def delay(self, failures: int) -> float:
        """Seconds to pause after `failures` failed tries in a row: doubling up to
        the cap, its upper half random (equal jitter), so that workers which lost
        storage together do not come back to it in step."""
        ceiling = min(self.max_delay_s, self.first_delay_s * 2.0 ** min(failures - 1, 32))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


@dataclass(eq=False)  # one entry per wait, compared by identity
class _Waiting:
    """A job whose images wait in the spool."""

    job_id: str
    images: list[SpooledImage]  # not stored yet, in order
    finish: Finish
    since: float  # time.monotonic() of its first try
    error: StorageError  # the last failure
    tries: int


class Storer:
    """Stores jobs' images in `storage`, through outages of up to `policy.window_s`.

    `canceled` says which of the given job ids a client asked to stop.
    """

    def __init__(
        self,
        storage: Storage,
        spool: Spool,
        policy: RetryPolicy | None = None,
        canceled: Callable[[list[str]], set[str]] | None = None,
    ):
        self.storage = storage
        self.spool = spool
        self.policy = policy or RetryPolicy()
        self._canceled = canceled or (lambda _: set())
        self._waiting: list[_Waiting] = []
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def waiting(self) -> list[str]:
        """The ids of the jobs whose images wait for storage, oldest first."""
        with self._changed:
            return [entry.job_id for entry in self._waiting]

    @property
    def full(self) -> bool:
        """Whether the spool is full: the worker takes no new job (worker.backpressure)."""
        return self.spool.full

    def store(self, job_id: str, uploads: list[Upload], finish: Finish) -> JobStatus:
        """Store a job's images, then return `finish(None)`.

        If storage fails, the images wait in the spool and RUNNING is returned;
        `finish` is called later, on the retry thread, with how storing ended.
        """
        since = time.monotonic()
        with self._changed:
            ahead = self._waiting[-1] if self._waiting else None
        if ahead is not None:
            # Storage is away: join the line behind the jobs already waiting.
            return self._wait(job_id, uploads, finish, since, ahead.error, tries=0)
        stored = 0
        try:
            for upload in uploads:
                self.storage.put(upload.key, upload.data, upload.content_type)
                stored += 1
        except StorageError as exc:
            if self.policy.window_s <= 0:
                return finish(exc)  # STORAGE_RETRY_S=0: no retries
            return self._wait(job_id, uploads[stored:], finish, since, exc, tries=1)
        return finish(None)

    def close(self, wait_s: float = SHUTDOWN_WAIT_S) -> list[str]:
        """Wait up to `wait_s` for waiting images to be stored, then stop retrying and
        empty the spool. Returns the jobs left: still `running` here, for the reaper."""
        with self._changed:
            if self._waiting:
                log.warning(
                    "stopping: waiting up to %.0f s for the images of %d job(s) to be stored",
                    wait_s,
                    len(self._waiting),
                )
            self._changed.wait_for(lambda: not self._waiting, timeout=wait_s)
            left = [entry.job_id for entry in self._waiting]
            self._stopping.set()
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=CANCEL_POLL_S * 5)
        if left:
            log.warning(
                "storage still unreachable: leaving job(s) %s to the reaper, which runs "
                "them again elsewhere once this worker's record is gone",
                ", ".join(left),
            )
        self.spool.clear()
        return left

    def _wait(
        self,
        job_id: str,
        uploads: list[Upload],
        finish: Finish,
        since: float,
        error: StorageError,
        tries: int,
    ) -> JobStatus:
        """Put the job's images in the spool and in line for the retry thread."""
        images: list[SpooledImage] = []
        try:
            for upload in uploads:
                images.append(self.spool.write(upload.key, upload.data, upload.content_type))
        except OSError as exc:
            for image in images:
                self.spool.remove(image)
            failure = StorageError(
                f"storage is unreachable ({error}) and the local spool could not hold "
                f"the images: {exc}"
            )
            failure.__cause__ = exc
            return finish(failure)
        with self._changed:
            self._waiting.append(_Waiting(job_id, images, finish, since, error, tries))
            self._start_thread()
            self._changed.notify_all()
        if tries:
            log.warning(
                "job %s: storage unreachable (%s); its images wait in the spool "
                "(%d bytes in all) and are tried again for up to %.0f s",
                job_id,
                error,
                self.spool.used_bytes,
                self.policy.window_s,
            )
        else:
            log.info("job %s: storage is away; its images wait in the spool, in line", job_id)
        return JobStatus.RUNNING

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="storage-retry", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failures = 0  # failed tries in a row: storage's state, whichever job tried
        while (entry := self._next()) is not None:
            if entry.tries and not failures:
                # The try that spooled it has just failed: pause before the next.
                failures = 1
                self._back_off(entry, failures)
                continue
            if self._try(entry):
                failures = 0
                continue
            failures += 1
            if not self._give_up_if_due(entry):
                self._back_off(entry, failures)

    def _next(self) -> _Waiting | None:
        """The oldest waiting job, once there is one; None when stopping."""
        self._drop_canceled()
        with self._changed:
            self._changed.wait_for(lambda: self._waiting or self._stopping.is_set())
            return None if self._stopping.is_set() else self._waiting[0]

    def _try(self, entry: _Waiting) -> bool:
        """Store what is left of the job's images: True once all are (and recorded)."""
        entry.tries += 1
        try:
            while entry.images:
                image = entry.images[0]
                self.storage.put(image.key, self.spool.read(image), image.content_type)
                entry.images.pop(0)
                self.spool.remove(image)
        except StorageError as exc:
            entry.error = exc
            return False
        except OSError as exc:
            # A spool file gone or unreadable (a disk fault): retrying cannot help.
            self._end(entry, StorageError(f"an image waiting in the spool was lost: {exc}"))
            return True
        log.info(
            "job %s: images stored at try %d, after %.1f s waiting",
            entry.job_id,
            entry.tries,
            time.monotonic() - entry.since,
        )
        self._end(entry, None)
        return True

    def _give_up_if_due(self, entry: _Waiting) -> bool:
        waited = time.monotonic() - entry.since
        if waited < self.policy.window_s:
            return False
        error = StorageError(
            f"storage was unreachable for {waited:.0f} s (tries: {entry.tries}); "
            f"last error: {entry.error}"
        )
        error.__cause__ = entry.error
        log.error("job %s: giving up on storing its images: %s", entry.job_id, error)
        self._end(entry, error)
        return True

    def _back_off(self, entry: _Waiting, failures: int) -> None:
        left = entry.since + self.policy.window_s - time.monotonic()
        # The last try falls at the end of the window, not past it.
        delay = max(0.0, min(self.policy.delay(failures), left))
        STORAGE_RETRIES.inc()
        log.warning(
            "storage unreachable (%s); trying job %s's images again in %.1f s "
            "(try %d failed; giving up in %.0f s)",
            entry.error,
            entry.job_id,
            delay,
            entry.tries,
            left,
        )
        resume = time.monotonic() + delay
        while (pause := resume - time.monotonic()) > 0:
            if self._stopping.wait(min(pause, CANCEL_POLL_S)):
                return
            self._drop_canceled()
            with self._changed:
                if entry not in self._waiting:
                    return  # canceled meanwhile: the next job's turn

    def _drop_canceled(self) -> None:
        """End the waiting jobs a client canceled: their images are not wanted."""
        with self._changed:
            ids = [entry.job_id for entry in self._waiting]
        if not ids:
            return
        try:
            canceled = self._canceled(ids)
        except redis.RedisError as exc:  # best effort: looked for again at the next poll
            log.warning("could not look for cancel requests: %s", exc)
            return
        with self._changed:
            dropped = [entry for entry in self._waiting if entry.job_id in canceled]
        for entry in dropped:
            log.info("job %s was canceled while its images waited for storage", entry.job_id)
            self._end(entry, JobStopped(None))

    def _end(self, entry: _Waiting, outcome: Exception | None) -> None:
        """Take the job out of the line and the spool, and record how it ended."""
        with self._changed:
            if entry in self._waiting:
                self._waiting.remove(entry)
            self._changed.notify_all()
        for image in entry.images:
            self.spool.remove(image)
        try:
            entry.finish(outcome)
        except Exception:
            # Like the finisher: a recording that fails must not end the retry thread.
            log.exception("recording the outcome of job %s failed", entry.job_id)
