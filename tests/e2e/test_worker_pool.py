"""`darkroom worker --workers N`: N worker processes sharing the queue.

How much a second worker buys is measured by the benchmark's scaling row
(`python -m bench --only scaling`), not asserted here: a test that reads the
clock fails on a busy machine with no defect.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from darkroom.processes import Child, spawn
from darkroom.stack import free_port
from shared.settings import Settings
from shared.workers import live_workers
from tests.e2e.helpers import submit, wait_for
from tests.support.metrics import read_metrics
from tests.support.processes import REPO_ROOT

POOL_DB = 9


@pytest.fixture(scope="module")
def pool_env(redis_base_url: str, registry_file: Path, tmp_path_factory) -> dict[str, str]:  # type: ignore[no-untyped-def]
    url = f"{redis_base_url}/{POOL_DB}"
    redis.Redis.from_url(url).flushdb()
    return {
        "REDIS_URL": url,
        "MODEL_CONFIG": str(registry_file),
        "STORAGE_URL": f"file://{tmp_path_factory.mktemp('pool-images')}",
        "WORKER_MODEL": "tiny-flaky",
        # Left over from an earlier run: the pool must start from empty files.
        "PROMETHEUS_MULTIPROC_DIR": str(_stale_metrics_dir(tmp_path_factory.mktemp("prom"))),
    }


def _stale_metrics_dir(path: Path) -> Path:
    """A multiprocess directory holding a dead process's count of 100 jobs."""
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from worker.metrics import JOBS_FINISHED as f; "
            "f.labels('tiny-flaky', 'succeeded').inc(100)",
        ],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "PROMETHEUS_MULTIPROC_DIR": str(path)},
        check=True,
    )
    assert list(path.glob("counter_*.db"))
    return path


@pytest.fixture(scope="module")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def pool(  # type: ignore[no-untyped-def]
    pool_env: dict[str, str], metrics_port: int, tmp_path_factory
) -> Iterator[Child]:
    log_path = tmp_path_factory.mktemp("pool-logs") / "pool.log"
    args = ["--workers", "2", "--name", "pooltest", "--metrics-port", str(metrics_port)]
    pool = start_pool(pool_env, args, 2, log_path)
    yield pool
    # SIGTERM, which the pool forwards to its workers: a SIGKILL would leave
    # them running as orphans, taking later runs' jobs under the same names.
    pool.stop(timeout_s=30)


def start_pool(env: dict[str, str], args: list[str], workers: int, log_path: Path) -> Child:
    """`darkroom worker ARGS`, returned once `workers` workers are ready."""
    pool = spawn(
        "darkroom worker",
        [sys.executable, "-m", "darkroom.cli", "worker", *args],
        {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        REPO_ROOT,
        log_path,
    )
    client = redis.Redis.from_url(env["REDIS_URL"])

    def started() -> bool:
        return len([w for w in live_workers(client) if w.state == "ready"]) >= workers

    pool.wait_until(started, 90, 0.2, what="the pool's workers ready")
    return pool


def test_two_workers_share_the_queue_and_stop_together(
    pool: Child, pool_env: dict[str, str], metrics_port: int
) -> None:
    client_redis = redis.Redis.from_url(pool_env["REDIS_URL"])
    names = sorted(w.name for w in live_workers(client_redis))
    assert names == ["cpu0@pooltest", "cpu1@pooltest"]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=pool_env["REDIS_URL"],
        registry_path=Path(pool_env["MODEL_CONFIG"]),
        storage_url=pool_env["STORAGE_URL"],
    )
    with TestClient(create_app(settings)) as client:
        jobs = [submit(client, prompt=f"slow pool {i}", model="tiny-flaky") for i in range(6)]
        done = [wait_for(client, job["id"]) for job in jobs]

    assert all(job["status"] == "succeeded" for job in done)
    assert {job["worker"] for job in done} == set(names)

    # Both processes' metrics on the pool's one port, added up; none of the
    # stale directory's; one busy gauge per live process.
    metrics = read_metrics(f"http://127.0.0.1:{metrics_port}/metrics")
    finished = metrics.value("darkroom_jobs_finished_total", status="succeeded")
    assert finished == 6
    assert metrics.value("darkroom_job_run_seconds_count", model="tiny-flaky") == 6
    busy = [labels for name, labels, _ in metrics.all if name == "darkroom_worker_busy"]
    assert len({labels["pid"] for labels in busy}) == 2
    assert metrics.value("darkroom_model_load_seconds_count", model="tiny-flaky") == 2

    pool.send(signal.SIGTERM)
    assert pool.wait(timeout=30) == 0
    assert live_workers(client_redis) == []
