"""The health checks in the deployment files, run for real against a real Redis.

The GPU workers' checks read the worker's own record, whose key is its Celery
node name: the `--name` each file gives the worker must be the name its check
reads. Written by darkroom's own code (write_worker), then by real worker
processes: a tiny-sd worker started with the manifest's command line, and a
webhook worker answering the ping.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from celery.utils.nodenames import default_nodename, host_format

from darkroom.processes import Child, spawn
from shared.workers import WorkerInfo, remove_worker, write_worker
from tests.deploy.manifests import (
    base_manifests,
    containers,
    exec_probe_code,
    find,
    gpu_workers,
    load_compose,
    option_value,
)
from tests.support.processes import worker_env

# Real workers and the webhook worker start for their checks.
pytestmark = pytest.mark.slow

# A database of the test Redis no other test flushes; only our own keys are touched.
DB = 11
POD_NAME = "darkroom-worker-sdxl-7c9f8d6b5-x2x4q"
STATES = {"loading": 1, "starting": 1, "ready": 0, "busy": 0, "no_model": 1, "stopping": 1}

WORKERS = gpu_workers(base_manifests())
COMPOSE = load_compose(env={})["services"]


def k8s_probe(worker_name: str) -> tuple[list[str], str]:
    """(the worker's command line, its readiness probe's code) from a worker Deployment."""
    (container,) = containers(find(WORKERS, "Deployment", worker_name))
    return list(container["command"]), exec_probe_code(container["readinessProbe"])


def node_name(name_option: str, env: dict[str, str]) -> str:
    """The Celery node name a worker started with `--name name_option` gets (Kubernetes
    expands $(VAR) in a container's command; Celery expands %h and adds a default name)."""
    for key, value in env.items():
        name_option = name_option.replace(f"$({key})", value)
    return str(host_format(default_nodename(name_option)))


def run_check(code: str, redis_url: str, cwd: Path, **env: str) -> int:
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "REDIS_URL": redis_url, **env},
        cwd=cwd,
        capture_output=True,
        timeout=60,
    )
    return result.returncode


@pytest.fixture
def redis_url(redis_base_url: str) -> str:
    return f"{redis_base_url}/{DB}"


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.mark.parametrize("worker", [w.name for w in WORKERS])
def test_k8s_readiness_probe_reads_its_pods_record(
    worker: str, redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    command, code = k8s_probe(worker)
    name = node_name(option_value(command, "--name") or "", {"POD_NAME": POD_NAME})
    assert name == f"gpu@{POD_NAME}"
    try:
        assert run_check(code, redis_url, tmp_path, POD_NAME=POD_NAME) == 1  # no record yet
        for state, expected in STATES.items():
            write_worker(client, WorkerInfo(name=name, state=state), ttl_s=60)
            rc = run_check(code, redis_url, tmp_path, POD_NAME=POD_NAME)
            assert rc == expected, f"state {state}: exit {rc}"
        # Another pod's record does not make this one ready.
        rc = run_check(code, redis_url, tmp_path, POD_NAME=POD_NAME + "-other")
        assert rc == 1
    finally:
        remove_worker(client, name)


def test_compose_worker_healthcheck_reads_its_containers_record(
    redis_url: str, client: redis.Redis, tmp_path: Path
) -> None:
    worker = COMPOSE["worker"]
    code = worker["healthcheck"]["test"][3]
    # In a container %h and socket.gethostname() are both the container's hostname.
    name = node_name(option_value(worker["command"], "--name") or "", {})
    assert name == f"gpu@{socket.gethostname()}"
    try:
        for state, expected in STATES.items():
            write_worker(client, WorkerInfo(name=name, state=state), ttl_s=60)
            assert run_check(code, redis_url, tmp_path) == expected, state
    finally:
        remove_worker(client, name)


def test_worker_checks_fail_without_redis(tmp_path: Path) -> None:
    closed = f"redis://127.0.0.1:{_closed_port()}/0"
    _, code = k8s_probe(WORKERS[0].name)
    assert run_check(code, closed, tmp_path, POD_NAME=POD_NAME) != 0
    assert run_check(COMPOSE["worker"]["healthcheck"]["test"][3], closed, tmp_path) != 0


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- real processes -----------------------------------------------------------


def start(name: str, argv: list[str], env: dict[str, str], cwd: Path) -> Child:
    """Run a darkroom process in `cwd` (a temporary folder: no developer's .env is read)."""
    return spawn(name, argv, worker_env(env), cwd, cwd / "process.log")


def wait_for(check: Callable[[], bool], child: Child, timeout_s: float) -> None:
    child.wait_until(check, timeout_s, 0.5, what=lambda: child.log_text()[-3000:])


def test_real_worker_becomes_ready_for_both_checks(
    redis_url: str, client: redis.Redis, registry_file: Path, tmp_path: Path
) -> None:
    """The Deployment's command line (tiny-sd instead of its GPU model, this host as
    the pod): not ready while loading, ready once consuming, not ready once stopped.
    Here the pod name is the hostname, as in a pod, so the compose check applies too."""
    command, k8s_code = k8s_probe(WORKERS[0].name)
    compose_code = COMPOSE["worker"]["healthcheck"]["test"][3]
    pod = socket.gethostname()
    model_at = command.index("--model") + 1
    argv = [sys.executable, "-m", "darkroom.cli", *command[1:model_at], "tiny-sd"]
    argv += [arg.replace("$(POD_NAME)", pod) for arg in command[model_at + 1 :]]
    name = node_name(option_value(command, "--name") or "", {"POD_NAME": pod})
    env = {
        "REDIS_URL": redis_url,
        "MODEL_CONFIG": str(registry_file),
        "STORAGE_URL": f"file://{tmp_path / 'images'}",
        "DEVICE": "cpu",
    }
    remove_worker(client, name)
    assert run_check(k8s_code, redis_url, tmp_path, POD_NAME=pod) == 1
    child = start("darkroom worker", argv, env, tmp_path)
    try:
        wait_for(
            lambda: run_check(k8s_code, redis_url, tmp_path, POD_NAME=pod) == 0,
            child,
            timeout_s=180,
        )
        assert run_check(compose_code, redis_url, tmp_path) == 0
    finally:
        child.stop(timeout_s=30)
    assert child.proc.returncode == 0
    assert run_check(k8s_code, redis_url, tmp_path, POD_NAME=pod) == 1


def test_real_webhook_worker_answers_its_check(redis_url: str, tmp_path: Path) -> None:
    """`darkroom webhooks`, and the ping both deployment files use to check it."""
    code = COMPOSE["webhooks"]["healthcheck"]["test"][3]
    hooks = find(base_manifests(), "Deployment", "darkroom-webhooks")
    (container,) = containers(hooks)
    assert exec_probe_code(container["readinessProbe"]) == code
    argv = [sys.executable, "-m", "darkroom.cli", *container["command"][1:]]
    child = start("darkroom webhooks", argv, {"REDIS_URL": redis_url}, tmp_path)
    try:
        wait_for(
            lambda: run_check(code, redis_url, tmp_path) == 0,
            child,
            timeout_s=120,
        )
    finally:
        child.stop(timeout_s=30)
    assert child.proc.returncode == 0
