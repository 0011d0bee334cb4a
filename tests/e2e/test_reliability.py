"""Workers that die, stop, run out of memory or time: every accepted job ends truthfully."""

from __future__ import annotations

import json
import signal
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from shared.settings import Settings
from shared.workers import worker_key
from tests.e2e.helpers import submit, wait_for
from tests.support.pipelines import steps_key
from tests.support.polling import wait_until
from tests.support.processes import (
    ChildProcess,
    WorkerProcess,
    children_of,
    spawn_darkroom_worker,
    start_darkroom_worker,
    start_worker,
)
from worker.engine import ENGINE_LOST_EXIT_CODE

RELIABILITY_DB = 10
# A database no API (and so no API reaper) uses: see the restart test.
RESTART_DB = 11
TTL_S = 3  # worker heartbeat TTL: a dead worker is noticed within seconds, not an hour


@pytest.fixture(scope="module")
def env(
    redis_base_url: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    url = f"{redis_base_url}/{RELIABILITY_DB}"
    redis.Redis.from_url(url).flushdb()
    base = tmp_path_factory.mktemp("reliability")
    registry = base / "models.yaml"
    registry.write_text(
        textwrap.dedent(f"""
        models:
          tiny-flaky:
            id: "{tiny_model_dir}"
            type: custom
            pipeline_class: "tests.support.pipelines:FlakyPipeline"
            params: {{default_steps: 2, max_steps: 50, default_size: [64, 64],
                      max_size: [64, 64], supports_i2i: false}}
          tiny-limited:
            id: "{tiny_model_dir}"
            type: custom
            pipeline_class: "tests.support.pipelines:FlakyPipeline"
            soft_time_limit_s: 0.6
            params: {{default_steps: 2, max_steps: 50, default_size: [64, 64],
                      max_size: [64, 64], supports_i2i: false}}
        runtime:
          primary_model: tiny-flaky
    """)
    )
    return {
        "REDIS_URL": url,
        "MODEL_CONFIG": str(registry),
        "STORAGE_URL": f"file://{base / 'images'}",
        "WORKER_TTL_S": str(TTL_S),
        "JOB_MAX_ATTEMPTS": "2",
    }


def api_settings(env: dict[str, str]) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=env["REDIS_URL"],
        registry_path=Path(env["MODEL_CONFIG"]),
        storage_url=env["STORAGE_URL"],
        worker_ttl_s=TTL_S,
        job_max_attempts=2,
    )


@pytest.fixture(scope="module")
def client(env: dict[str, str]) -> Iterator[TestClient]:
    """The API: besides serving, it runs the reaper that re-queues jobs of dead workers."""
    with TestClient(create_app(api_settings(env))) as test_client:
        yield test_client


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(name: str, model: str = "tiny-flaky", **extra: str) -> WorkerProcess:
        worker_env = {**env, "WORKER_MODEL": model, **extra}
        worker = start_worker(name, worker_env, tmp_path, env["REDIS_URL"])
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop(signal.SIGKILL, timeout_s=5)


def _wait_running(client: TestClient, job_id: str) -> dict:
    def running() -> dict | None:
        job = client.get(f"/jobs/{job_id}").json()
        return job if job["status"] == "running" and job["progress"] > 0 else None

    return wait_until(running, 30, what=f"job {job_id} running")


def test_sigkilled_worker_job_runs_again_elsewhere(client: TestClient, workers) -> None:  # type: ignore[no-untyped-def]
    started = {w.name: w for w in (workers("a@reliability"), workers("b@reliability"))}
    victim_job = submit(client, prompt="slow victim", model="tiny-flaky", steps=10)
    others = [submit(client, prompt=f"bystander {i}", model="tiny-flaky") for i in range(3)]

    running = _wait_running(client, victim_job["id"])
    victim = started[running["worker"]]
    engine = engine_process_of(victim)
    victim.proc.send_signal(signal.SIGKILL)  # the Celery process: its engine goes with it
    victim.proc.wait()
    engine.wait(timeout=10)  # ended by the kernel: no orphan holding the model

    done = wait_for(client, victim_job["id"], timeout_s=60)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["worker"] != victim.name
    assert done["images"]
    for job in others:
        assert wait_for(client, job["id"], timeout_s=60)["status"] == "succeeded"


def test_a_dead_engine_takes_its_worker_down_and_the_job_runs_elsewhere(
    client: TestClient,
    workers,  # type: ignore[no-untyped-def]
) -> None:
    first = workers("g@reliability")
    job = submit(client, prompt="slow engine victim", model="tiny-flaky", steps=10)
    assert _wait_running(client, job["id"])["worker"] == first.name

    engine_process_of(first).kill()

    assert first.proc.wait(timeout=30) == ENGINE_LOST_EXIT_CODE
    second = workers("h@reliability")
    done = wait_for(client, job["id"], timeout_s=60)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["worker"] == second.name


def test_an_inline_worker_runs_its_jobs_in_its_own_process(
    client: TestClient,
    workers,  # type: ignore[no-untyped-def]
) -> None:
    worker = workers("i@reliability", WORKER_ENGINE="inline")

    done = wait_for(client, submit(client, prompt="inline", model="tiny-flaky")["id"])

    assert done["status"] == "succeeded", done
    assert done["worker"] == worker.name
    assert done["timings"]["inference_s"] > 0
    assert engine_processes_of(worker) == []


def engine_processes_of(worker: WorkerProcess) -> list[ChildProcess]:
    """The engine processes a worker started (not multiprocessing's resource tracker)."""
    return [c for c in children_of(worker.proc.pid) if "spawn_main" in c.cmdline]


def engine_process_of(worker: WorkerProcess) -> ChildProcess:
    (engine,) = engine_processes_of(worker)
    return engine


def test_poison_job_fails_after_the_attempt_limit(client: TestClient, workers) -> None:  # type: ignore[no-untyped-def]
    first, second = workers("c@reliability"), workers("d@reliability")
    job = submit(client, prompt="crash the worker", model="tiny-flaky")

    done = wait_for(client, job["id"], timeout_s=60)

    assert done["status"] == "failed"
    assert done["error"]["type"] == "worker_lost"
    assert done["attempts"] == 2
    assert first.proc.wait(timeout=60) != 0
    assert second.proc.wait(timeout=60) != 0


def test_warm_shutdown_finishes_the_running_job_and_takes_no_new_one(
    client: TestClient,
    workers,  # type: ignore[no-untyped-def]
) -> None:
    worker = workers("e@reliability")
    running = submit(client, prompt="slow finish me", model="tiny-flaky", steps=8)
    waiting = submit(client, prompt="not for a stopping worker", model="tiny-flaky")
    _wait_running(client, running["id"])

    worker.proc.send_signal(signal.SIGTERM)

    assert worker.proc.wait(timeout=30) == 0
    assert client.get(f"/jobs/{running['id']}").json()["status"] == "succeeded"
    assert client.get(f"/jobs/{waiting['id']}").json()["status"] == "queued"
    client.post(f"/jobs/{waiting['id']}/cancel")


def test_out_of_memory_and_time_limit_fail_the_job_not_the_worker(
    client: TestClient,
    workers,  # type: ignore[no-untyped-def]
    env: dict[str, str],
) -> None:
    workers("f@reliability", model="tiny-limited")
    oom = submit(client, prompt="oom please", model="tiny-limited")
    too_long = submit(client, prompt="slow and over the limit", model="tiny-limited", steps=20)
    fine = submit(client, prompt="fine", model="tiny-limited")

    oom_done = wait_for(client, oom["id"])
    assert oom_done["status"] == "failed"
    assert oom_done["error"]["type"] == "out_of_memory"
    assert "runtime.memory" in oom_done["error"]["message"]
    limited = wait_for(client, too_long["id"])
    assert limited["status"] == "failed"
    assert limited["error"]["type"] == "time_limit_exceeded"
    # Stopped at the limit, not after its 20 slow steps.
    steps_run = redis.Redis.from_url(env["REDIS_URL"]).llen(steps_key("slow and over the limit"))
    assert 0 < steps_run < 20
    assert wait_for(client, fine["id"])["status"] == "succeeded"


def test_two_unnamed_workers_on_one_host_are_two_workers(
    client: TestClient, env: dict[str, str], tmp_path: Path
) -> None:
    """The plainest start, `darkroom worker` twice: each process has its own identity,
    so killing the one running a job hands that job to the other."""
    first = start_darkroom_worker(env, tmp_path, env["REDIS_URL"])
    second = start_darkroom_worker(env, tmp_path, env["REDIS_URL"])
    started = {first.name: first, second.name: second}
    try:
        assert first.name != second.name
        listed = {w["name"] for w in client.get("/status").json()["workers"]}
        assert set(started) <= listed

        job = submit(client, prompt="slow identity victim", model="tiny-flaky", steps=10)
        running = _wait_running(client, job["id"])
        victim = started[running["worker"]]
        survivor = first if victim is second else second
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()

        done = wait_for(client, job["id"], timeout_s=90)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        assert done["worker"] == survivor.name
    finally:
        for worker in started.values():
            worker.stop(signal.SIGKILL, timeout_s=5)


def test_a_worker_refuses_the_name_of_a_live_one(
    workers,  # type: ignore[no-untyped-def]
    env: dict[str, str],
    tmp_path: Path,
) -> None:
    holder = workers("taken@reliability")
    log_path = tmp_path / "second.log"
    second = spawn_darkroom_worker(
        {**env, "WORKER_MODEL": "tiny-flaky"}, log_path, "--name", "taken@reliability"
    )

    assert second.wait(timeout=120) != 0
    log = log_path.read_text()
    assert "'taken@reliability' belongs to a live worker" in log, log
    assert f"pid {holder.proc.pid}" in log
    assert holder.proc.poll() is None
    record = redis.Redis.from_url(env["REDIS_URL"]).get(worker_key("taken@reliability"))
    assert record is not None
    assert json.loads(record)["pid"] == holder.proc.pid


def test_a_restart_under_the_same_name_hands_back_the_dead_ones_job(
    env: dict[str, str], redis_base_url: str, tmp_path: Path
) -> None:
    """A container restarted with a fixed --name (compose, Kubernetes) takes the name of
    the process that died with a job; that job must not stay `running` for ever. No API
    runs here, so only the new worker itself can hand the job back."""
    env = {**env, "REDIS_URL": f"{redis_base_url}/{RESTART_DB}"}
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    settings = api_settings(env)
    first = start_darkroom_worker(env, tmp_path, env["REDIS_URL"], "--name", "fixed@reliability")
    restarted = None
    try:
        with TestClient(create_app(settings)) as api:
            job = submit(api, prompt="slow restart victim", model="tiny-flaky", steps=10)
            _wait_running(api, job["id"])
        # The API and its reaper are gone: nothing but the new worker can hand it back.
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        restarted = start_darkroom_worker(
            env, tmp_path, env["REDIS_URL"], "--name", "fixed@reliability"
        )
        with TestClient(create_app(settings)) as api:
            done = wait_for(api, job["id"], timeout_s=90)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        assert "was left running under this worker's name" in restarted.log_path.read_text()
    finally:
        first.stop(signal.SIGKILL, timeout_s=5)
        if restarted is not None:
            restarted.stop(signal.SIGKILL, timeout_s=5)
