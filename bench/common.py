"""What every measurement shares: its result row, run settings, the direct baseline process."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from bench.stack import REPO_ROOT, BenchError, Stack

PASS, MISS, NA, ERROR = "PASS", "MISS", "n/a", "ERROR"


@dataclass
class Settings:
    jobs: int = 64
    repeats: int = 5  # measured rounds; medians are reported
    warmup_jobs: int = 4
    api_duration_s: float = 8.0
    api_connections: int = 32
    latency_jobs: int = 50
    cold_repeats: int = 3
    queue_threads: int = 1
    quick: bool = False
    # The chaos soak (run only with --only chaos): its length and its jobs per second.
    chaos_minutes: float = 10.0
    chaos_rate: float = 3.0
    # The fairness row (run only with --only fairness): how long both keys share.
    fairness_minutes: float = 10.0


@dataclass
class Result:
    name: str
    measured: str
    target: str
    status: str
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0  # how long the measurement took

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": self.measured,
            "target": self.target,
            "status": self.status,
            "details": self.details,
            "notes": self.notes,
            "seconds": round(self.seconds, 1),
        }


def run_python(row: str, code: str, *args: str) -> str:
    """Run `code` in a Python process of its own (its memory and threads its own), from
    the repository root; its stdout. BenchError with its stderr when it fails."""
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"{row} row: a child process failed:\n{done.stderr[-3000:]}")
    return done.stdout


def verdict(ok: bool) -> str:
    return PASS if ok else MISS


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class DirectRunner:
    """The baseline process (bench/direct.py): model loaded, waiting for `run N`."""

    def __init__(self, stack: Stack, threads: int, warmup: int):
        self._log = (stack.workdir / "logs" / "direct.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.direct",
                "--threads",
                str(threads),
                "--warmup",
                str(warmup),
            ],
            env={**stack.env, "TORCH_THREADS": str(threads)},
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.ready = self._read()
        self.threads = int(self.ready["threads"])

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise BenchError("the direct baseline process exited (see logs/direct.log)")
        return json.loads(line)  # type: ignore[no-any-return]

    def run(self, jobs: int) -> float:
        """Seconds for `jobs` jobs in the plain loop."""
        self.start_run(jobs)
        return self.finish_run()

    def start_run(self, jobs: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {jobs}\n")
        self.proc.stdin.flush()

    def finish_run(self) -> float:
        return float(self._read()["seconds"])

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> DirectRunner:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
