"""Child processes: start one, wait until it is ready, read the end of its log, stop it.

The one launcher behind `darkroom up`, the worker pool, the Sentinel cluster, the
benchmarks and the tests, so that each stops its children the same careful way.
A child is signalled itself, not its process group: a Celery worker shuts its own
engine down, and a signal of the group would reach that engine mid-job.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from darkroom.waiting import wait_until

T = TypeVar("T")

# How long a child has after SIGTERM before it is killed: a Celery worker's warm
# shutdown finishes the step it is on, seconds on a CPU.
STOP_GRACE_S = 20.0


class ChildExited(RuntimeError):
    """A child ended while it was expected to run (starting, or serving)."""


@dataclass
class Child:
    """A started process, under the name its messages give it."""

    name: str
    proc: subprocess.Popen[bytes]
    # None: its output goes where this process's goes (the terminal).
    log_path: Path | None
    spawned_at: float  # time.time() just before it was started

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status, once it has exited (TimeoutExpired after `timeout`)."""
        return self.proc.wait(timeout=timeout)

    def log_text(self) -> str:
        """All its log says so far; "" when it has none (yet)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last `lines` lines of its log, for an error message."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def check(self, lines: int = 40) -> None:
        """ChildExited, saying how it ended and with the end of its log, if it has exited."""
        code = self.proc.poll()
        if code is None:
            return
        message = f"{self.name} exited with code {code}"
        tail = self.log_tail(lines)
        if tail:
            message += f"; the end of {self.log_path}:\n{tail}"
        raise ChildExited(message)

    def wait_until(
        self,
        condition: Callable[[], T],
        timeout_s: float,
        interval_s: float = 0.05,
        what: str | Callable[[], str] = "ready",
        ignoring: tuple[type[BaseException], ...] = (),
    ) -> T:
        """darkroom.waiting.wait_until that ends with ChildExited as soon as this child
        exits, instead of polling a dead process until the timeout."""

        def running_and() -> T:
            self.check()
            return condition()

        return wait_until(running_and, timeout_s, interval_s, what, ignoring)

    def send(self, sig: int) -> None:
        """Signal it, if it still runs."""
        if self.alive():
            self.proc.send_signal(sig)

    def stop(
        self, sig: int = signal.SIGTERM, timeout_s: float = STOP_GRACE_S, signalled: bool = False
    ) -> bool:
        """Send `sig` (unless `signalled` already), wait, and SIGKILL it if it will not
        go; False when it had to be killed. A second SIGTERM would cut a Celery warm
        shutdown short, hence `signalled`."""
        if not signalled:
            self.send(sig)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        return True

    def kill(self) -> None:
        """SIGKILL, as a crash would, and reap it."""
        self.proc.kill()
        self.proc.wait()


def spawn(
    name: str,
    argv: list[str],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log_path: Path | None = None,
    append: bool = False,
) -> Child:
    """Start `argv` with its stdout and stderr in `log_path` (None: this process's own).

    `append` keeps what the file holds: one log across restarts, or a file the
    child writes itself (Redis's `logfile`), which then also catches what it
    prints before it opens that file.
    """
    if log_path is None:
        spawned_at = time.time()
        return Child(name, subprocess.Popen(argv, env=env, cwd=cwd), None, spawned_at)
    with log_path.open("ab" if append else "wb") as output:
        spawned_at = time.time()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT)
    return Child(name, proc, log_path, spawned_at)


def stop_together(children: Iterable[Child], timeout_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every child first, then wait for each: they shut down side by side,
    not one grace period after another."""
    children = list(children)
    for child in children:
        child.send(signal.SIGTERM)
    for child in children:
        child.stop(timeout_s=timeout_s, signalled=True)


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness check: `url` answers 200 (a refused connection is "not yet")."""

    def answers() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return answers
