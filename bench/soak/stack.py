"""The chaos row's processes: the API and three workers on a Sentinel cluster.

Apart from bench.stack's plain Redis: here every darkroom process finds the
master through the sentinels (REDIS_URL names a port nothing listens on), as a
high-availability deployment does, and each process can be killed and replaced.
Logs go to the run's work directory, one file per process start.
"""

from __future__ import annotations

import random
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.soak.cluster import broker_messages
from bench.stack import MODEL, BenchError, Stack
from darkroom import process_commands
from darkroom.processes import Child, ChildExited, http_ok, stop_together
from darkroom.sentinel_cluster import SentinelCluster
from darkroom.stack import free_port
from darkroom.waiting import wait_until
from shared.workers import WorkerInfo, read_worker

WORKERS = 3
# A killed worker's record expires after this, and a reaper hands its job back.
WORKER_TTL_S = 5
# Nothing listens here: only the sentinels can say where the master is.
NOWHERE = "redis://127.0.0.1:1/0"


@dataclass
class ChaosStack:
    """The API and the workers of a chaos run, on `cluster`, spawned through `stack`."""

    stack: Stack
    cluster: SentinelCluster
    api_port: int = field(default_factory=free_port)
    api: Child | None = None
    workers: list[Child] = field(default_factory=list)
    # Every worker ever started, and the names of those the chaos SIGKILLed.
    started_workers: list[Child] = field(default_factory=list)
    killed: set[str] = field(default_factory=set)
    # Workers that exited on their own: name, exit status, log.
    exited: list[dict[str, Any]] = field(default_factory=list)
    _api_starts: int = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "REDIS_URL": NOWHERE,
            "REDIS_SENTINELS": self.cluster.sentinels_setting,
            "REDIS_SENTINEL_MASTER": self.cluster.master_name,
            "REDIS_MIN_REPLICAS_ACK": "1",
            "REDIS_ACK_TIMEOUT_S": "1",
            "WORKER_TTL_S": str(WORKER_TTL_S),
            "TORCH_THREADS": "1",
            "STORAGE_URL": f"file://{self.stack.workdir / 'chaos-images'}",
            "PUBLIC_BASE_URL": self.api_url,
        }

    def master(self) -> redis.Redis:
        """A client of the server the sentinels name master now (a plain client: it
        does not follow a later failover, so each use takes a new one)."""
        return redis.Redis.from_url(self.cluster.redis_url(0), socket_timeout=2)

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        self.start_api()
        for _ in range(WORKERS):
            self.spawn_worker()
        self.wait_ready(list(self.workers))

    def close(self) -> None:
        stop_together(self.workers)
        if self.api is not None:
            self.api.stop()

    def keep_cluster_logs(self) -> Path:
        """Copy the Redis servers' and sentinels' logs into the work directory (the
        cluster removes its own directory on exit)."""
        dest = self.stack.workdir / "logs" / "chaos-redis"
        source = self.cluster._dir  # the cluster keeps no public path to its logs
        if source is not None:
            dest.mkdir(parents=True, exist_ok=True)
            for log in source.glob("*.log"):
                shutil.copy(log, dest / log.name)
        return dest

    # -- the API -------------------------------------------------------------------

    def start_api(self, timeout_s: float = 60) -> None:
        """uvicorn on the same port every time, as Stack.start_uvicorn serves it;
        returns once /readyz says Redis and the storage answer."""
        self._api_starts += 1
        self.api = self.stack.spawn(
            f"chaos-api-{self._api_starts}",
            process_commands.uvicorn("api.main:app", self.api_port),
            extra_env=self.env,
        )
        try:
            self.api.wait_until(http_ok(self.api_url + "/readyz"), timeout_s, interval_s=0.1)
        except (ChildExited, AssertionError) as exc:
            raise BenchError(f"the chaos API did not start:\n{self.api.log_tail()}") from exc

    def ensure_api(self) -> None:
        """Start the API again if it is not running (a restart that failed)."""
        if self.api is None or not self.api.alive():
            self.start_api()

    def restart_api(self, sig: signal.Signals) -> float:
        """Stop the API with `sig` and start it again; seconds it was away."""
        assert self.api is not None
        down_at = time.monotonic()
        self.api.stop(sig)
        self.start_api()
        return time.monotonic() - down_at

    # -- workers -------------------------------------------------------------------

    def spawn_worker(self) -> Child:
        """Start one Celery worker on tiny-sd under a name no other had in this run."""
        name = f"chaos{len(self.started_workers) + 1}@bench"
        child = self.stack.spawn(
            name,
            process_commands.celery_worker(name, self.stack.worker_loglevel),
            extra_env={**self.env, "WORKER_MODEL": MODEL},
        )
        self.workers.append(child)
        self.started_workers.append(child)
        return child

    def kill_worker(self, rng: random.Random) -> str:
        """SIGKILL a random running worker and start a replacement; what happened."""
        victim = rng.choice(self.workers)
        doing = self._doing(victim)
        victim.kill()
        self.killed.add(victim.name)
        self.workers.remove(victim)
        return f"SIGKILL {victim.name} ({doing}); started {self.spawn_worker().name}"

    def _doing(self, worker: Child) -> str:
        """What a worker's record said it was doing (read just before a kill)."""
        try:
            with self.master() as client:
                info = read_worker(client, worker.name)
        except (redis.RedisError, RuntimeError) as exc:
            return f"record unread: {type(exc).__name__}"
        if info is None:
            return "no record"
        return f"{info.state}, job {info.current_job}" if info.current_job else info.state

    def replace_exited(self) -> list[tuple[str, int, str]]:
        """Workers that exited on their own (name, exit status, new name), replaced."""
        gone = [w for w in self.workers if not w.alive()]
        replaced = []
        for worker in gone:
            self.workers.remove(worker)
            self.exited.append(_exit_info(worker))
            replaced.append((worker.name, worker.proc.returncode, self.spawn_worker().name))
        return replaced

    def wait_ready(self, workers: list[Child], timeout_s: float = 180) -> None:
        pending = list(workers)

        def all_ready() -> bool:
            nonlocal pending
            pending = [w for w in pending if self._state(w) != "ready"]
            for worker in pending:
                if not worker.alive():
                    raise BenchError(f"worker {worker.name} exited:\n{worker.log_tail()}")
            return not pending

        try:
            wait_until(all_ready, timeout_s, interval_s=0.2)
        except AssertionError as exc:
            names = ", ".join(w.name for w in pending)
            raise BenchError(f"workers {names} not ready after {timeout_s:.0f} s") from exc

    def broker_messages(self, ids: list[str]) -> dict[str, list[str]]:
        """Where the broker still holds a message for each of `ids` (chaos_cluster)."""
        with self.master() as client:
            return broker_messages(client, ids)

    def _state(self, worker: Child) -> str | None:
        try:
            with self.master() as client:
                info = read_worker(client, worker.name)
        except (redis.RedisError, RuntimeError):  # RuntimeError: no master named just now
            return None
        return None if info is None else info.state

    def workers_at_end(self) -> list[dict[str, Any]]:
        """Each worker of the last generation: running, and its live record's state."""
        try:
            with self.master() as client:
                records = {w.name: read_worker(client, w.name) for w in self.workers}
        except (redis.RedisError, RuntimeError):
            records = {}
        return [
            {
                "worker": w.name,
                "running": w.alive(),
                "spawned_at": w.spawned_at,
                "state": _field(records.get(w.name), "state"),
                "jobs_done": _field(records.get(w.name), "jobs_done"),
            }
            for w in self.workers
        ]

    def exited_on_their_own(self) -> list[dict[str, Any]]:
        """Every worker that exited without being killed, replaced or not yet."""
        return self.exited + [_exit_info(w) for w in self.workers if not w.alive()]


def _exit_info(worker: Child) -> dict[str, Any]:
    return {
        "worker": worker.name,
        "returncode": worker.proc.returncode,
        "log": str(worker.log_path),
    }


def _field(info: WorkerInfo | None, name: str) -> Any:
    return None if info is None else getattr(info, name)
