"""Start and stop real darkroom processes (Celery workers, the API) for tests."""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import redis

from darkroom import process_commands
from darkroom.processes import Child, http_ok, spawn
from shared.workers import WorkerInfo, live_workers, worker_key
from tests.support.polling import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]

# A worker the tests started: its name, `proc`, `log_path`, stop(sig, timeout_s).
WorkerProcess = Child


@dataclass
class ApiProcess(Child):
    """The API in a uvicorn process, at `url`."""

    url: str


def worker_env(env: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "PYTHONUNBUFFERED": "1",
        "TORCH_THREADS": "1",
        **env,
    }


def spawn_darkroom_worker(env: dict[str, str], log_path: Path, *args: str) -> Child:
    """`darkroom worker ARGS...` as an operator types it."""
    argv = [sys.executable, "-m", "darkroom.cli", "worker", "--loglevel=INFO", *args]
    return spawn("darkroom worker", argv, worker_env(env), cwd=REPO_ROOT, log_path=log_path)


def start_darkroom_worker(
    env: dict[str, str], log_dir: Path, redis_url: str, *args: str
) -> WorkerProcess:
    """Start `darkroom worker ARGS...` and wait until it announced itself ready.

    Its name is whatever the worker chose (found by its pid in the live records).
    """
    index = len(list(log_dir.glob("darkroom-worker-*.log")))
    child = spawn_darkroom_worker(env, log_dir / f"darkroom-worker-{index}.log", *args)
    client = redis.Redis.from_url(redis_url)

    def ready() -> list[WorkerInfo]:
        return [w for w in live_workers(client) if w.pid == child.proc.pid and w.state == "ready"]

    try:
        [mine, *_] = child.wait_until(
            ready, 120, 0.2, what=lambda: f"darkroom worker ready:\n{child.log_text()}"
        )
    except AssertionError:
        child.kill()
        raise
    child.name = mine.name
    return child


def start_worker(
    name: str, env: dict[str, str], log_dir: Path, redis_url: str, wait_state: str = "ready"
) -> WorkerProcess:
    """Start `celery -A worker.celery_app worker` and wait for its record to reach `wait_state`."""
    log_path = log_dir / f"{name.replace('@', '_')}.log"
    argv = process_commands.celery_worker(name)
    worker = spawn(name, argv, worker_env(env), cwd=REPO_ROOT, log_path=log_path)
    client = redis.Redis.from_url(redis_url)

    def in_state() -> bool:
        raw = client.get(worker_key(name))
        return raw is not None and json.loads(raw)["state"] == wait_state

    try:
        worker.wait_until(
            in_state, 120, 0.2, what=lambda: f"worker {name} {wait_state}:\n{worker.log_tail(60)}"
        )
    except AssertionError:
        worker.stop(signal.SIGKILL)
        raise
    return worker


def start_api(env: dict[str, str], log_path: Path, port: int) -> ApiProcess:
    """The API in a uvicorn process on `port`, as `darkroom api` runs it; waits for /healthz."""
    url = f"http://127.0.0.1:{port}"
    env = worker_env({"PUBLIC_BASE_URL": url, **env})
    child = spawn(
        "the API", process_commands.uvicorn("api.main:app", port), env, REPO_ROOT, log_path
    )
    api = ApiProcess(child.name, child.proc, log_path, child.spawned_at, url)
    try:
        api.wait_until(
            http_ok(f"{url}/healthz"), 60, 0.1, what=lambda: f"the API answering:\n{api.log_text()}"
        )
    except AssertionError:
        api.kill()
        raise
    return api


def start_redis_server(
    argv: list[str], log_path: Path, client: redis.Redis, append: bool = False
) -> Child:
    """A redis-server of a test's own (`argv`), once `client` gets an answer to PING.

    `append`: one log across restarts on the same port."""
    server = spawn("redis-server", argv, log_path=log_path, append=append)
    try:
        server.wait_until(
            client.ping,
            10,
            what=lambda: f"redis-server answering:\n{server.log_tail()}",
            ignoring=(redis.ConnectionError,),
        )
    except AssertionError:
        server.kill()
        raise
    return server


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
