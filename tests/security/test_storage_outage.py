"""An S3 outage replayed against real workers: no job in flight fails for it.

Real Celery worker processes store to moto's S3 server over HTTP on a fixed
127.0.0.1 port, which the tests stop and start again (or start only late).
While S3 refuses connections, generated jobs stay `running` with their images
in the worker's spool and succeed once it is back; a job whose storage stays
away past STORAGE_RETRY_S fails with a clear `storage_error`; a worker whose
spool is full takes no new job (it stays `queued`, free for any worker) until
the spool drains; a worker that dies with images spooled loses no job.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import redis
from fastapi.testclient import TestClient
from moto.server import ThreadedMotoServer

from api.main import create_app
from darkroom.stack import free_port
from shared.queue import token_message
from shared.settings import Settings
from tests.e2e.helpers import download_png, submit, wait_for
from tests.support.metrics import read_metrics
from tests.support.polling import wait_until
from tests.support.processes import WorkerProcess, start_worker
from worker.spool import spool_dir

# A database of the test Redis no other test uses, and a bucket of our own (moto
# keeps its buckets per test process, shared with the session's S3 server).
OUTAGE_DB = 5
BUCKET = "darkroom-outage"
MODEL = "tiny-sd"
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Logged by the worker at each failed try that is tried again (worker.storing).
RETRY_LINE = "images again in"


class S3Server(ThreadedMotoServer):
    """moto's S3 server on one 127.0.0.1 port, which an outage stops and starts again."""

    def __init__(self, port: int) -> None:
        super().__init__(ip_address="127.0.0.1", port=port, verbose=False)
        self.endpoint = f"http://127.0.0.1:{port}"
        self.running = False

    def start(self) -> None:
        super().start()
        self.running = True
        # moto keeps its buckets in this process: a restart finds them, as S3 would.
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=BUCKET)

    def stop(self) -> None:
        super().stop()
        self.running = False
        if self._server is not None:
            # Closed, not only stopped: connections are refused, not left hanging.
            self._server.server_close()


@dataclass
class Stack:
    """One worker and the API, storing to `s3`."""

    s3: S3Server
    worker: WorkerProcess
    client: TestClient
    spool: Path  # the worker's own spool directory
    redis: redis.Redis

    def job(self, job_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.get(f"/jobs/{job_id}").json()
        return answer

    def submit(self, prompt: str, seed: int = 1) -> str:
        job_id: str = submit(self.client, prompt=prompt, model=MODEL, seed=seed)["id"]
        return job_id

    def spooled(self, job_id: str) -> bool:
        return (self.spool / f"jobs%2F{job_id}%2F0.png").is_file()

    def logged(self, text: str) -> int:
        """How often the worker's log says `text`."""
        return self.worker.log_path.read_text(errors="replace").count(text)

    def wait_for_retries(self, count: int) -> None:
        """Until the worker has tried (and failed) `count` more times to store."""
        target = self.logged(RETRY_LINE) + count
        wait_until(lambda: self.logged(RETRY_LINE) >= target, what=f"{count} more retries")

    def broker_holds(self, job_id: str, queue: str) -> bool:
        """Whether the job's wake-up token waits in its queue, for any worker to take."""
        payloads: list[bytes] = self.redis.lrange(token_message(queue, job_id).list_name, 0, -1)  # type: ignore[assignment]
        return any(json.loads(p)["headers"]["argsrepr"] == repr([job_id]) for p in payloads)


@pytest.fixture(scope="module")
def outage_redis_url(redis_base_url: str) -> str:
    url = f"{redis_base_url}/{OUTAGE_DB}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    """Credentials for this process's boto3 clients (the API's, the bucket's)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in AWS_ENV.items():
            patch.setenv(name, value)
        yield


@pytest.fixture
def stacks(
    outage_redis_url: str, registry_file: Path, tmp_path: Path, aws_env: None
) -> Iterator[Callable[..., Stack]]:
    """Start a worker (with its own settings) and the API on an S3 server of their own."""
    started: list[Stack] = []

    def start(name: str, s3: S3Server, ttl_s: float = 15, **settings: str) -> Stack:
        env = {
            **AWS_ENV,
            "REDIS_URL": outage_redis_url,
            "MODEL_CONFIG": str(registry_file),
            "WORKER_MODEL": MODEL,
            "WORKER_TTL_S": str(ttl_s),
            "STORAGE_URL": f"s3://{BUCKET}/outage",
            "S3_ENDPOINT_URL": s3.endpoint,
            "STORAGE_SPOOL_DIR": str(tmp_path / "spool"),
            "STORAGE_RETRY_MAX_DELAY_S": "0.5",
            **settings,
        }
        worker = start_worker(name, env, tmp_path, outage_redis_url)
        api_settings = Settings(
            _env_file=None,
            redis_url=outage_redis_url,
            registry_path=registry_file,
            storage_url=env["STORAGE_URL"],
            s3_endpoint_url=s3.endpoint,
            public_base_url="http://testserver",
            worker_ttl_s=ttl_s,  # the API's reaper looks this often (a third of it)
        )
        client = TestClient(create_app(api_settings)).__enter__()
        stack = Stack(
            s3,
            worker,
            client,
            spool_dir(tmp_path / "spool", name),
            redis.Redis.from_url(outage_redis_url),
        )
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.worker.stop(signal.SIGTERM)
        stack.client.__exit__(None, None, None)
        if stack.s3.running:
            stack.s3.stop()


def test_jobs_in_flight_during_an_s3_outage_stay_running_and_succeed_once_it_is_back(
    stacks: Callable[..., Stack],
) -> None:
    s3 = S3Server(free_port())
    s3.start()
    metrics_port = free_port()
    stack = stacks("outage@test", s3, WORKER_METRICS_PORT=str(metrics_port))
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    before = wait_for(stack.client, stack.submit("before the outage"))
    assert before["status"] == "succeeded"

    s3.stop()
    jobs = [stack.submit(f"during the outage {i}", seed=i) for i in range(4)]
    canceled = stack.submit("canceled during the outage")
    # Each job generated, its images in the worker's spool, and still running as
    # the worker keeps trying: not failed.
    wait_until(
        lambda: all(stack.spooled(j) for j in [*jobs, canceled]),
        timeout_s=120,
        what="every job's images in the spool",
    )
    stack.wait_for_retries(3)
    for job_id in [*jobs, canceled]:
        assert stack.job(job_id)["status"] == "running"
    during = read_metrics(metrics_url)  # what an operator sees
    assert during.value("darkroom_storage_spool_bytes") > 0
    assert during.value("darkroom_storage_retries_total") >= 3

    # A cancel while its images wait: they are dropped and the job ends canceled.
    assert stack.client.post(f"/jobs/{canceled}/cancel").status_code == 202
    assert wait_for(stack.client, canceled)["status"] == "canceled"
    assert not stack.spooled(canceled)

    s3.start()  # on the same port: S3 is back
    for job_id in jobs:
        done = wait_for(stack.client, job_id, timeout_s=120)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 1  # stored by the worker that made them, never re-run
        (image,) = done["images"]
        _, png = download_png(image["url"])
        assert png.size == (64, 64)
    assert stack.logged("images stored at try") == len(jobs)
    assert list(stack.spool.iterdir()) == []
    assert read_metrics(metrics_url).value("darkroom_storage_spool_bytes") == 0


def test_a_job_whose_storage_stays_away_past_storage_retry_s_fails_with_a_storage_error(
    stacks: Callable[..., Stack],
) -> None:
    s3 = S3Server(free_port())  # never started: every connection is refused
    stack = stacks("give-up@test", s3, STORAGE_RETRY_S="2")
    job_id = stack.submit("storage never comes back")
    done = wait_for(stack.client, job_id, timeout_s=120)
    assert done["status"] == "failed"
    assert done["attempts"] == 1
    error = done["error"]
    assert error["type"] == "storage_error"
    assert error["message"].startswith("storage was unreachable for ")
    assert f"last error: upload of jobs/{job_id}/0.png to s3://{BUCKET} failed" in error["message"]
    assert f'Could not connect to the endpoint URL: "{s3.endpoint}/' in error["message"]
    assert stack.logged(f"job {job_id}: giving up on storing its images") == 1
    assert not stack.spooled(job_id)


def test_a_worker_whose_spool_is_full_takes_no_new_job_until_it_drains(
    stacks: Callable[..., Stack],
) -> None:
    s3 = S3Server(free_port())  # starts only later
    stack = stacks("full@test", s3, STORAGE_SPOOL_BYTES="1")
    first = stack.submit("fills the spool")
    wait_until(
        lambda: stack.logged(f"job {first}: storage unreachable"),
        timeout_s=120,
        what="the first job's images in the spool",
    )

    second = stack.submit("waits for room", seed=2)
    wait_until(
        lambda: stack.logged(f"job {second} goes back to the head of its queue"),
        what="the second job turned away",
    )
    stack.wait_for_retries(3)
    waiting = stack.job(second)
    assert waiting["status"] == "queued"
    assert waiting["attempts"] == 0
    assert waiting["queue_position"] == 0
    assert stack.broker_holds(second, waiting["queue"])  # free for any worker
    assert stack.job(first)["status"] == "running"

    s3.start()
    for job_id in (first, second):
        done = wait_for(stack.client, job_id, timeout_s=120)
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 1


def test_a_worker_that_dies_with_images_spooled_loses_no_job(
    stacks: Callable[..., Stack],
) -> None:
    s3 = S3Server(free_port())
    dying = stacks("dies@test", s3, ttl_s=3)
    job_id = dying.submit("outlives its worker")
    wait_until(lambda: dying.spooled(job_id), timeout_s=120, what="the job's images spooled")
    dying.worker.stop(signal.SIGKILL)
    # Still claimed by the dead worker: the spool was only a buffer, and the reaper
    # hands the job to the next worker once the dead one's record expires.
    assert dying.job(job_id)["status"] == "running"

    s3.start()
    stacks("heir@test", s3, ttl_s=3)
    done = wait_for(dying.client, job_id, timeout_s=120)
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 2
    assert done["worker"] == "heir@test"
