"""Start and stop real darkroom processes (Celery workers, the API) for tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis

from darkroom import process_commands
from shared.workers import WorkerInfo, live_workers, worker_key
from tests.support.polling import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def worker_env(env: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        "TORCH_THREADS": "1",
        **env,
    }


def spawn_darkroom_worker(
    env: dict[str, str], log_path: Path, *args: str
) -> subprocess.Popen[bytes]:
    """`darkroom worker ARGS...` as an operator types it."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "darkroom.cli", "worker", "--loglevel=INFO", *args],
            env=worker_env(env),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def start_darkroom_worker(
    env: dict[str, str], log_dir: Path, redis_url: str, *args: str
) -> WorkerProcess:
    """Start `darkroom worker ARGS...` and wait until it announced itself ready.

    Its name is whatever the worker chose (found by its pid in the live records).
    """
    index = len(list(log_dir.glob("darkroom-worker-*.log")))
    log_path = log_dir / f"darkroom-worker-{index}.log"
    proc = spawn_darkroom_worker(env, log_path, *args)
    client = redis.Redis.from_url(redis_url)

    def ready() -> list[WorkerInfo]:
        if proc.poll() is not None:
            raise RuntimeError(f"darkroom worker exited early:\n{log_path.read_text()}")
        return [w for w in live_workers(client) if w.pid == proc.pid and w.state == "ready"]

    try:
        [mine, *_] = wait_until(
            ready, 120, 0.2, what=lambda: f"darkroom worker ready:\n{log_path.read_text()}"
        )
    except AssertionError:
        proc.kill()
        raise
    return WorkerProcess(mine.name, proc, log_path)


def start_worker(
    name: str, env: dict[str, str], log_dir: Path, redis_url: str, wait_state: str = "ready"
) -> WorkerProcess:
    """Start `celery -A worker.celery_app worker` and wait for its record to reach `wait_state`."""
    log_path = log_dir / f"{name.replace('@', '_')}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            process_commands.celery_worker(name),
            env=worker_env(env),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(name, proc, log_path)
    client = redis.Redis.from_url(redis_url)

    def in_state() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"worker {name} exited early:\n{worker.log_tail()}")
        raw = client.get(worker_key(name))
        return raw is not None and json.loads(raw)["state"] == wait_state

    try:
        wait_until(
            in_state, 120, 0.2, what=lambda: f"worker {name} {wait_state}:\n{worker.log_tail()}"
        )
    except AssertionError:
        worker.stop(signal.SIGKILL)
        raise
    return worker


@dataclass
class ApiProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_api(env: dict[str, str], log_path: Path, port: int) -> ApiProcess:
    """The API in a uvicorn process on `port`, as `darkroom api` runs it; waits for /healthz."""
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            process_commands.uvicorn("api.main:app", port),
            env=worker_env({"PUBLIC_BASE_URL": url, **env}),
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited early:\n{log_path.read_text()}")
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200

    try:
        wait_until(
            healthy,
            60,
            0.1,
            what=lambda: f"the API answering:\n{log_path.read_text()}",
            ignoring=(httpx.TransportError,),
        )
    except AssertionError:
        proc.kill()
        raise
    return ApiProcess(url, proc, log_path)


@dataclass(frozen=True)
class ChildProcess:
    """A process this test did not start itself (a worker's engine), seen through /proc."""

    pid: int
    cmdline: str

    def alive(self) -> bool:
        try:
            state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        return state != "Z"  # a zombie has ended; its parent has not reaped it yet

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> None:
        wait_until(lambda: not self.alive(), timeout_s=timeout, interval_s=0.05)


def children_of(pid: int) -> list[ChildProcess]:
    """The live child processes of `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(fields[1]) == pid:
            found.append(ChildProcess(int(stat.parent.name), cmdline))
    return found
