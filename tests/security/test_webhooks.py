"""The webhook probes of the safety review, replayed.

One tenant's trickling receivers must not stall another tenant's webhooks; the
webhook worker must ride out a Redis restart; IPv4 addresses hidden inside
IPv6 ones must be refused; malformed URLs get a 422, not a 500. Real Redis,
real webhook worker processes, real HTTP receivers on 127.0.0.1. Nothing here
dials an address off this machine: the IPv6 literals are refused before any
connection is made (each test checks the refusal first, so a regression fails
there rather than dialling).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from kombu.transport.redis import Channel as KombuRedisChannel

from api.main import create_app
from darkroom import process_commands
from darkroom.processes import Child, spawn
from darkroom.stack import free_port, redis_server_binary
from shared.apikeys import hash_key, owner_id
from shared.constants import WEBHOOK_QUEUE, WEBHOOK_TASK, broker_lists
from shared.guarded_http import Deadline, GuardedBackend
from shared.jobs import GenerationParams, JobRecord, JobStatus, WebhookAttempt, utcnow
from shared.queue import make_celery
from shared.settings import Settings
from shared.storage import storage_from_settings
from shared.store import JobStore
from shared.webhook_events import WebhookEmitter
from shared.webhooks import UnsafeAddress, is_public, log_key, resolve_allowed
from tests.support.polling import wait_until
from tests.support.processes import REPO_ROOT, start_redis_server
from tests.support.receiver import Receiver
from tests.support.stalling_receivers import SilentReceiver, TrickleReceiver

SECRET = "whsec_" + base64.b64encode(b"darkroom-webhook-probes-secret!!").decode()
# A database of the test Redis no other test uses.
WEBHOOKS_DB = 4
TENANT_A = owner_id(hash_key("tenant-a-key-0123456789abcdef"))
TENANT_B = owner_id(hash_key("tenant-b-key-0123456789abcdef"))

# IPv6 literals that carry a loopback, private or link-local IPv4 address.
EMBEDDED_PRIVATE = [
    "::127.0.0.1",  # IPv4-compatible
    "::ffff:0:7f00:1",  # IPv4-translated (SIIT)
    "64:ff9b::a9fe:a9fe",  # NAT64 well-known prefix: 169.254.169.254
    "64:ff9b::7f00:1",
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
    "2002:7f00:1::",  # 6to4: 127.0.0.1
    "2002:a00:1::",  # 6to4: 10.0.0.1
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1 (XOR-ed)
    "2001:0:4136:e378:8000:63bf:3f57:5656",  # Teredo, client 192.168.169.169
]
# The same forms around public IPv4 addresses stay allowed.
EMBEDDED_PUBLIC = ["64:ff9b::808:808", "2002:808:808::"]


# --- IPv4 inside IPv6 -------------------------------------------------------------


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
def test_embedded_private_ipv4_is_not_public(address: str) -> None:
    assert not is_public(address)


@pytest.mark.parametrize("address", EMBEDDED_PUBLIC)
def test_embedded_public_ipv4_is_public(address: str) -> None:
    assert is_public(address)


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
def test_connect_time_guard_refuses_embedded_private_ipv4(address: str) -> None:
    with pytest.raises(UnsafeAddress, match="non-public"):
        resolve_allowed(address, 443, allow_private=False)
    # What a delivery dials through: refused while resolving, before any socket.
    backend = GuardedBackend(allow_private=False, deadline=Deadline(5))
    with pytest.raises(UnsafeAddress, match="non-public"):
        backend.connect_tcp(address, 443)


@pytest.fixture
def hooks_api(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(webhook_secret=SECRET))) as client:
        yield client


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
def test_submit_refuses_embedded_private_ipv4(hooks_api: TestClient, address: str) -> None:
    response = hooks_api.post(
        "/jobs", json={"prompt": "x", "model": "tiny-sd", "webhook": f"https://[{address}]/hook"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "webhook"
    assert "non-public" in error["message"]


# --- malformed URLs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://example.com:99999/hook", "Port out of range"),
        ("https://example.com:-1/hook", "Port could not be cast"),
        ("https://example.com:0/hook", "port 0"),
        ("http://[::1/hook", "Invalid IPv6 URL"),
        ("https://[zz]/hook", "does not appear to be an IPv4 or IPv6 address"),
        # A label longer than 63 characters: IDNA refuses it while resolving.
        ("https://" + "a" * 64 + ".example.com/hook", "cannot resolve"),
    ],
)
def test_malformed_webhook_urls_are_a_422(hooks_api: TestClient, url: str, problem: str) -> None:
    response = hooks_api.post("/jobs", json={"prompt": "x", "model": "tiny-sd", "webhook": url})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "webhook"
    assert problem in error["message"]


# --- the webhook worker --------------------------------------------------------------


def start_webhook_worker(env: dict[str, str], log_path: Path, *args: str) -> Child:
    """`celery -A worker.webhook_app worker` as `darkroom webhooks` runs it, once ready."""
    worker = spawn(
        "the webhook worker",
        [*process_commands.webhook_worker("probes@test"), *args],
        {**os.environ, "PYTHONPATH": str(REPO_ROOT), **env},
        REPO_ROOT,
        log_path,
    )
    worker.wait_until(lambda: "ready." in worker.log_text(), 60, what="the webhook worker to start")
    return worker


def worker_env(redis_url: str, **settings: str) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "WEBHOOK_SECRET": SECRET,
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
        # A failed attempt's retry is an hour away: what arrives during a test
        # is a first attempt, a deferral's return or a restored message.
        "WEBHOOK_RETRY_DELAYS_S": "[3600]",
        **settings,
    }


def attempts(client: redis.Redis, job_id: str) -> list[WebhookAttempt]:
    return [
        WebhookAttempt.model_validate_json(item) for item in client.lrange(log_key(job_id), 0, -1)
    ]


# --- one tenant's trickling receivers --------------------------------------------------


def finished_job(store: JobStore, owner: str, webhook: str) -> JobRecord:
    """A job of `owner` run to success through the job store, as a GPU worker does:
    the store's webhook emitter queues its job.completed delivery."""
    record = JobRecord(
        id=uuid.uuid4().hex,
        created_at=utcnow(),
        model="tiny-sd",
        queue="darkroom.model.tiny-sd",
        params=GenerationParams(
            prompt="a lighthouse",
            negative_prompt=None,
            width=64,
            height=64,
            steps=2,
            guidance_scale=7.5,
            seed=1,
            num_images=1,
        ),
        webhook=webhook,
        owner=owner,
    )
    store.create(record)
    store.transition(record.id, JobStatus.RUNNING, worker="probes@test")
    return store.transition(record.id, JobStatus.SUCCEEDED)


def test_one_tenants_trickling_receivers_do_not_stall_another_tenants_webhook(
    redis_base_url: str, tmp_path: Path
) -> None:
    """Tenant A's receivers answer 200 and then a byte every half second, forever;
    with the webhook worker's three threads and a limit of two per key, tenant B's
    webhook is still delivered, and A's attempts end at their deadline."""
    url = f"{redis_base_url}/{WEBHOOKS_DB}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    env = worker_env(url, WEBHOOK_TIMEOUT_S="2", WEBHOOK_MAX_PER_KEY="2")
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_url=url,
        webhook_secret=SECRET,
        storage_url=f"file://{tmp_path / 'images'}",
    )
    store = JobStore(
        client,
        settings.job_ttl_s,
        on_event=WebhookEmitter(make_celery(settings), settings, storage_from_settings(settings)),
    )
    trickle, receiver = TrickleReceiver(interval_s=0.5), Receiver().start()
    worker = start_webhook_worker(env, tmp_path / "webhooks.log", "--concurrency=3")
    try:
        a_jobs = [finished_job(store, TENANT_A, trickle.base_url + "/a") for _ in range(6)]
        wait_until(lambda: trickle.calls() >= 2, what="tenant A's receivers to trickle")

        b_job = finished_job(store, TENANT_B, receiver.url("/b"))
        [call] = receiver.wait_for("/b", 1, timeout_s=30)
        assert json.loads(call.body)["data"]["id"] == b_job.id
        wait_until(lambda: attempts(client, b_job.id), what="tenant B's attempt recorded")
        assert [a.outcome for a in attempts(client, b_job.id)] == ["delivered"]

        # A's attempts were cut at the deadline, not left to trickle.
        a_attempts = wait_until(
            lambda: [a for job in a_jobs for a in attempts(client, job.id)],
            what="an attempt of tenant A to end",
        )
        for attempt in a_attempts:
            assert attempt.outcome == "retrying"
            assert attempt.error == "deadline passed: no complete answer within 2 s"
        assert worker.alive()
    finally:
        worker.stop(timeout_s=30)
        trickle.stop()
        receiver.stop()


# --- a Redis restart ------------------------------------------------------------------


@dataclass
class RestartableRedis:
    """A redis-server of this test's own that keeps its data across a restart."""

    binary: str
    port: int
    data_dir: str
    server: Child | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = process_commands.redis_server(self.binary, self.port, self.data_dir)
        # Later options win: an append-only file, written through, so the queue
        # and kombu's unacknowledged messages survive the restart.
        self.server = start_redis_server(
            [*argv, "--appendonly", "yes", "--appendfsync", "always"],
            Path(self.data_dir) / "redis.log",
            redis.Redis.from_url(self.url),
            append=True,
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout_s=10)
            self.server = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_redis() -> Iterator[RestartableRedis]:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("no redis-server to restart")
    server = RestartableRedis(binary, free_port(), tempfile.mkdtemp(prefix="darkroom-restart-"))
    server.start()
    yield server
    server.stop()


def test_the_webhook_worker_rides_out_a_redis_restart(
    private_redis: RestartableRedis, tmp_path: Path
) -> None:
    """40 deliveries held by the worker (16 in flight to a receiver that never
    answers, the rest prefetched) when Redis restarts: the worker stays up, and
    none of them waits for the visibility timeout (2 h) to be handed out again."""
    env = worker_env(private_redis.url, WEBHOOK_TIMEOUT_S="30")
    silent = SilentReceiver()
    worker = start_webhook_worker(env, tmp_path / "webhooks.log")
    client = redis.Redis.from_url(private_redis.url)
    unacked = KombuRedisChannel.unacked_key  # kombu's hash of messages taken, not yet acked

    try:
        celery = make_celery(Settings(_env_file=None, redis_url=private_redis.url))  # type: ignore[call-arg]
        job_ids = [f"restart-{i}" for i in range(40)]
        for i, job_id in enumerate(job_ids):
            delivery = {
                "event_id": f"msg_restart_{i}",
                "event": "job.completed",
                "job_id": job_id,
                "owner": f"tenant-{i}",
                "url": silent.base_url + "/hook",
                "body": json.dumps({"type": "job.completed", "data": {"id": job_id}}),
                "attempt": 1,
            }
            celery.send_task(WEBHOOK_TASK, args=[delivery], queue=WEBHOOK_QUEUE)
        worker.wait_until(
            lambda: (
                silent.held() == 16
                and client.hlen(unacked) == 40
                and not any(client.llen(name) for name in broker_lists(WEBHOOK_QUEUE))
            ),
            60,
            what="all 40 deliveries held by the worker, 16 of them in flight",
        )

        private_redis.restart()
        silent.release()  # the held calls fail; every later one is answered

        worker.wait_until(
            lambda: all(attempts(client, job_id) for job_id in job_ids),
            60,
            what="every delivery attempted",
        )
        worker.wait_until(
            lambda: client.hlen(unacked) == 0,
            60,
            what="no message left for the visibility timeout",
        )
        assert worker.alive()
        assert "Unrecoverable error" not in worker.log_text()
    finally:
        worker.stop(timeout_s=30)
        silent.stop()
