"""Metrics after a known amount of work, read with prometheus_client's own parser;
the same numbers through a real Prometheus server; JSON logs from real processes.

A worker and an API of their own, on a Redis database of their own, so that
every count is exactly this module's work.
"""

from __future__ import annotations

import json
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from api.main import create_app
from darkroom.client import DarkroomClient
from darkroom.stack import free_port
from tests.conftest import S3_BUCKET
from tests.support.metrics import read_metrics
from tests.support.polling import wait_until
from tests.support.processes import ApiProcess, WorkerProcess, start_api, start_worker
from tests.support.prometheus import query, running_prometheus

METRICS_DB = 8
MODEL = "tiny-flaky"
WORKER = "metrics@test"
JOB_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def metrics_env(redis_base_url: str, registry_file: Path, s3_endpoint: str) -> dict[str, str]:
    url = f"{redis_base_url}/{METRICS_DB}"
    redis.Redis.from_url(url).flushdb()
    return {
        "REDIS_URL": url,
        "MODEL_CONFIG": str(registry_file),
        "STORAGE_URL": f"s3://{S3_BUCKET}/metrics",
        "S3_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LOG_FORMAT": "json",
    }


@pytest.fixture(scope="module")
def worker(
    metrics_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, str]]:
    port = free_port()
    env = {**metrics_env, "WORKER_MODEL": MODEL, "WORKER_METRICS_PORT": str(port)}
    process = start_worker(
        WORKER, env, tmp_path_factory.mktemp("metrics-worker"), metrics_env["REDIS_URL"]
    )
    yield process, f"http://127.0.0.1:{port}/metrics"
    process.stop(signal.SIGTERM)


@pytest.fixture(scope="module")
def api(
    metrics_env: dict[str, str],
    worker: tuple[WorkerProcess, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiProcess]:
    log = tmp_path_factory.mktemp("metrics-api") / "api.log"
    server = start_api(metrics_env, log, free_port())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(api: ApiProcess) -> Iterator[DarkroomClient]:
    with DarkroomClient(api.url) as api_client:
        yield api_client


def _slow(tag: str) -> str:
    return f"slow {tag} {uuid.uuid4().hex[:8]}"


def test_known_work_reads_exactly_in_the_api_and_worker_metrics(
    api: ApiProcess, worker: tuple[WorkerProcess, str], client: DarkroomClient
) -> None:
    _, worker_url = worker
    busy = client.submit({"prompt": _slow("busy"), "model": MODEL, "steps": 50})
    wait_until(lambda: client.get(busy["id"])["status"] == "running")
    queued = [client.submit({"prompt": f"queued {i}", "model": MODEL}) for i in range(2)]
    queued.append(client.submit({"prompt": "queued high", "model": MODEL, "priority": "high"}))

    # While the busy job runs: the queue behind it, per priority, and the worker busy.
    during = read_metrics(f"{api.url}/metrics")
    assert during.value("darkroom_queue_depth", model=MODEL, priority="normal") == 2
    assert during.value("darkroom_queue_depth", model=MODEL, priority="high") == 1
    assert during.value("darkroom_queue_depth", model=MODEL, priority="low") == 0
    assert during.value("darkroom_jobs_running", model=MODEL) == 1
    assert during.value("darkroom_workers", model=MODEL, state="busy") == 1
    assert read_metrics(worker_url).value("darkroom_worker_busy") == 1

    client.cancel(busy["id"])
    failed = client.submit({"prompt": "raise on purpose", "model": MODEL})
    finished = [client.wait(job["id"], timeout_s=120) for job in [busy, *queued, failed]]
    assert [job["status"] for job in finished] == [
        "canceled",
        "succeeded",
        "succeeded",
        "succeeded",
        "failed",
    ]

    api_after = read_metrics(f"{api.url}/metrics")
    assert api_after.value("darkroom_jobs_submitted_total", model=MODEL, priority="normal") == 4
    assert api_after.value("darkroom_jobs_submitted_total", model=MODEL, priority="high") == 1
    assert api_after.total("darkroom_queue_depth") == 0
    assert api_after.total("darkroom_jobs_running") == 0
    assert api_after.value("darkroom_workers", model=MODEL, state="ready") == 1
    assert api_after.value("darkroom_redis_up") == 1
    posts = api_after.value(
        "darkroom_http_requests_total", method="POST", route="/jobs", status="202"
    )
    assert posts == 5

    metrics = read_metrics(worker_url)
    assert metrics.value("darkroom_jobs_finished_total", model=MODEL, status="succeeded") == 3
    assert metrics.value("darkroom_jobs_finished_total", model=MODEL, status="failed") == 1
    assert metrics.value("darkroom_jobs_finished_total", model=MODEL, status="canceled") == 1
    for histogram in (
        "darkroom_job_queue_wait_seconds",
        "darkroom_job_run_seconds",
        "darkroom_job_inference_seconds",
        "darkroom_batch_size",
    ):
        assert metrics.value(f"{histogram}_count", model=MODEL) == 5, histogram
    assert metrics.value("darkroom_batch_size_sum", model=MODEL) == 5  # each job alone
    assert metrics.value("darkroom_model_load_seconds_count", model=MODEL) == 1
    assert metrics.value("darkroom_worker_busy") == 0
    # The queued jobs waited behind the busy one: their waits are in the histogram.
    assert metrics.value("darkroom_job_queue_wait_seconds_sum", model=MODEL) > 0


def test_no_label_holds_a_job_id_or_a_raw_path(
    api: ApiProcess, worker: tuple[WorkerProcess, str], client: DarkroomClient
) -> None:
    job = client.wait(client.submit({"prompt": "labels", "model": MODEL})["id"])
    httpx.get(f"{api.url}/jobs/{job['id']}")
    httpx.get(f"{api.url}/jobs/{uuid.uuid4().hex}")  # 404 of a job id
    httpx.get(f"{api.url}/files/jobs/{job['id']}/0.png")
    httpx.get(f"{api.url}/no/such/{job['id']}")  # no route at all
    httpx.request("BREW", f"{api.url}/jobs")  # a method no one defined
    # The app's route templates (the schema writes {key:path} as {key}); /metrics
    # is left out of the schema.
    templates = {*create_app().openapi()["paths"], "/metrics", "unmatched"}
    _, worker_url = worker
    for url in (f"{api.url}/metrics", worker_url):
        samples = read_metrics(url)
        assert samples.all, url
        for name, labels, _ in samples.all:
            for key, value in labels.items():
                assert not JOB_ID.search(value), (name, key, value)
                if key == "route":
                    assert value.replace(":path}", "}") in templates, value
                elif key != "le":
                    assert "/" not in value, (name, key, value)
    routes = {labels.get("route") for _, labels, _ in read_metrics(f"{api.url}/metrics").all}
    assert {"/jobs/{job_id}", "/files/{key:path}", "unmatched"} <= routes


def test_logs_are_one_json_object_a_line_with_job_model_and_worker(
    api: ApiProcess, worker: tuple[WorkerProcess, str], client: DarkroomClient
) -> None:
    process, _ = worker
    job = client.wait(client.submit({"prompt": "logged", "model": MODEL})["id"])
    lines = [line for line in process.log_path.read_text().splitlines() if line.strip()]
    records = [_json_line(line) for line in lines]
    assert all(records), [line for line, record in zip(lines, records, strict=True) if not record]
    about_job = [r for r in records if r and r.get("job_id") == job["id"]]
    assert about_job, "no log line carries the job's id"
    assert any("succeeded" in str(r["message"]) for r in about_job)
    for record in about_job:
        assert record["model"] == MODEL
        assert record["worker"] == WORKER
        assert {"time", "level", "logger", "message"} <= record.keys()
    api_lines = [line for line in api.log_path.read_text().splitlines() if line.strip()]
    assert api_lines
    assert all(_json_line(line) for line in api_lines)


def _json_line(line: str) -> dict[str, object] | None:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def test_prometheus_scrapes_the_api_and_the_worker(
    api: ApiProcess,
    worker: tuple[WorkerProcess, str],
    client: DarkroomClient,
    tmp_path: Path,
) -> None:
    _, worker_url = worker
    job = client.wait(client.submit({"prompt": "scraped", "model": MODEL})["id"])
    assert job["status"] == "succeeded"
    succeeded = read_metrics(worker_url).value(
        "darkroom_jobs_finished_total", model=MODEL, status="succeeded"
    )
    submitted = read_metrics(f"{api.url}/metrics").total("darkroom_jobs_submitted_total")
    targets = {
        "darkroom-api": api.url.removeprefix("http://"),
        "darkroom-worker": worker_url.removeprefix("http://").removesuffix("/metrics"),
    }
    with running_prometheus(targets, tmp_path) as prometheus:
        finished_query = (
            f'darkroom_jobs_finished_total{{job="darkroom-worker",model="{MODEL}",'
            'status="succeeded"}'
        )
        wait_until(lambda: _scalar(prometheus, finished_query) == succeeded, timeout_s=60)
        wait_until(
            lambda: _scalar(prometheus, "sum(darkroom_jobs_submitted_total)") == submitted,
            timeout_s=60,
        )
        assert _scalar(prometheus, 'sum(up{job=~"darkroom-.*"})') == 2
        assert _scalar(prometheus, f'darkroom_workers{{model="{MODEL}",state="ready"}}') == 1


def _scalar(prometheus: str, promql: str) -> float | None:
    result = query(prometheus, promql)
    return float(result[0]["value"][1]) if result else None
