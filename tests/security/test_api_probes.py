"""The probes of the safety review (issue "Safe to share"), replayed against the API.

Each test sends what the attacker or the clumsy client sent, to a real API
process (uvicorn) or the app in-process, on real Redis and S3 over HTTP, and
checks the fixed answer. Nothing here dials an address off this machine.
"""

from __future__ import annotations

import base64
import io
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
import webuiapi
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from darkroom.stack import free_port
from shared.apikeys import hash_key, owner_id
from shared.settings import Settings
from shared.workers import WorkerInfo, write_worker
from tests.support.polling import wait_until
from tests.support.processes import ApiProcess, start_api
from tests.support.prometheus import query, running_prometheus

KEY_A = "tenant-a-key-0123456789abcdef"  # from API_KEYS: the defaults
KEY_B = "tenant-b-key-0123456789abcdef"  # API_KEYS_FILE: may use high
KEY_ADMIN = "tenant-admin-key-0123456789ab"  # API_KEYS_FILE: admin
KEY_LOW = "tenant-low-key-0123456789abcde"  # API_KEYS_FILE: low only, a queue cap of 2
METRICS_TOKEN = "metrics-token-0123456789abcdef"
PROBES_DB = 6
BODY = {"prompt": "a lighthouse", "model": "tiny-sd"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def png(size: tuple[int, int]) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (20, 120, 200)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "api-keys"
    path.write_text(
        "# digest, then what the key may do\n"
        f"{hash_key(KEY_B)} name=tenant-b priorities=high,normal,low weight=2\n"
        f"{hash_key(KEY_ADMIN)} name=ops admin=true\n"
        f"{hash_key(KEY_LOW)} name=batch priorities=low max_queued=2 max_running=1\n"
    )
    return path


class BlackHole:
    """A TCP server on 127.0.0.1 that accepts connections and never answers: an S3
    endpoint that hangs."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=256)
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.server.close()
        for connection in self.held:
            connection.close()


@pytest.fixture(scope="module")
def hanging_s3() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture(scope="module")
def probes_api(
    redis_base_url: str,
    registry_file: Path,
    keys_file: Path,
    hanging_s3: BlackHole,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiProcess]:
    """The API over HTTP with two kinds of keys, METRICS_TOKEN, and an S3 that hangs."""
    url = f"{redis_base_url}/{PROBES_DB}"
    redis.Redis.from_url(url).flushdb()
    env = {
        "REDIS_URL": url,
        "MODEL_CONFIG": str(registry_file),
        "STORAGE_URL": "s3://darkroom-probes/images",
        "S3_ENDPOINT_URL": f"http://127.0.0.1:{hanging_s3.port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "API_KEYS": KEY_A,
        "API_KEYS_FILE": str(keys_file),
        "METRICS_TOKEN": METRICS_TOKEN,
    }
    log = tmp_path_factory.mktemp("probes-api") / "api.log"
    server = start_api(env, log, free_port())
    yield server
    server.stop()


# --- 4. /readyz while S3 hangs ---------------------------------------------------------------


def test_readyz_while_s3_hangs_is_bounded_and_starves_no_route(probes_api: ApiProcess) -> None:
    """The probe: 45 unauthenticated /readyz while S3 hangs used to take every API
    thread; keyed users' /status, /jobs and POST /jobs with an init_image then timed
    out. Readiness now depends on Redis alone and reports storage in a word."""
    init_image = png((64, 64))

    def keyed_calls(client: httpx.Client) -> list[int]:
        headers = bearer(KEY_A)
        return [
            client.get("/status", headers=headers).status_code,
            client.get("/jobs", headers=headers).status_code,
            client.post(
                "/jobs", json={**BODY, "init_image": init_image}, headers=headers
            ).status_code,
        ]

    # A generous client timeout: a hang, not a speed, fails the test.
    with (
        httpx.Client(base_url=probes_api.url, timeout=30) as client,
        ThreadPoolExecutor(48) as pool,
    ):
        probes = [pool.submit(client.get, "/readyz") for _ in range(45)]
        keyed = [pool.submit(keyed_calls, client) for _ in range(3)]
        answers = [probe.result() for probe in probes]
        assert all(statuses == [200, 200, 202] for statuses in (k.result() for k in keyed))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"status": "ready", "checks": {"redis": "ok", "storage": "timeout"}}


def test_readyz_and_status_name_no_address_when_redis_is_down(
    make_settings: Callable[..., Settings],
) -> None:
    """The probe: /readyz without a key returned Redis's host:port and the S3 endpoint."""
    port = free_port()  # nothing listens there
    settings = make_settings(redis_url=f"redis://127.0.0.1:{port}/0")
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        status = client.get("/status")
    assert ready.status_code == 503
    checks = {"redis": "unreachable", "storage": "ok"}
    assert ready.json() == {"status": "not_ready", "checks": checks}
    assert status.json()["redis"] == {"reachable": False, "error": "unreachable"}
    for text in (ready.text, status.text):
        assert "127.0.0.1" not in text
        assert str(port) not in text


# --- 7. inputs larger than the model's max_size ----------------------------------------------


def test_inpainting_with_an_image_over_max_size_is_422_before_queueing(
    probes_api: ApiProcess,
) -> None:
    """The probe: a 121 KB request (a 4096x4096 image and mask, n=4) on a model limited
    to 256 made four 4096x4096 PNGs."""
    huge = png((4096, 4096))
    body = {**BODY, "init_image": huge, "mask_image": huge, "num_images": 4}
    response = httpx.post(f"{probes_api.url}/jobs", json=body, headers=bearer(KEY_A), timeout=30)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "init_image"
    listed = httpx.get(f"{probes_api.url}/jobs", headers=bearer(KEY_A), timeout=10).json()
    assert all(job["params"]["width"] <= 256 for job in listed["jobs"])


# --- 8. priorities per key -------------------------------------------------------------------


def test_high_priority_is_refused_to_a_key_not_granted_it(probes_api: ApiProcess) -> None:
    """The probe: tenant A topped up `high` jobs within its rate limit and B's normal
    job never started. `high` is now granted per key in API_KEYS_FILE."""
    with httpx.Client(base_url=probes_api.url, timeout=30) as client:
        refused = client.post("/jobs", json={**BODY, "priority": "high"}, headers=bearer(KEY_A))
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert (error["type"], error["field"]) == ("forbidden", "priority")
        assert "normal, low" in error["message"]

        for priority in ("normal", "low"):
            accepted = client.post(
                "/jobs", json={**BODY, "priority": priority}, headers=bearer(KEY_A)
            )
            assert accepted.status_code == 202
            assert accepted.json()["priority"] == priority
        granted = client.post("/jobs", json={**BODY, "priority": "high"}, headers=bearer(KEY_B))
        assert granted.status_code == 202
        assert granted.json()["priority"] == "high"


def test_a_low_only_key_gets_low_by_default_and_its_own_queue_cap(
    probes_api: ApiProcess,
) -> None:
    with httpx.Client(base_url=probes_api.url, timeout=30) as client:
        first = client.post("/jobs", json=BODY, headers=bearer(KEY_LOW))
        assert first.status_code == 202
        assert first.json()["priority"] == "low"
        assert client.post("/jobs", json=BODY, headers=bearer(KEY_LOW)).status_code == 202
        # max_queued=2 in the keys file, over RATE_LIMIT_MAX_QUEUED's 100.
        third = client.post("/jobs", json=BODY, headers=bearer(KEY_LOW))
        assert third.status_code == 429
        assert third.json()["detail"]["max"] == 2
        assert (
            client.post(
                "/jobs", json={**BODY, "priority": "normal"}, headers=bearer(KEY_LOW)
            ).status_code
            == 403
        )


def test_me_tells_a_key_its_name_priorities_limits_and_usage(probes_api: ApiProcess) -> None:
    with httpx.Client(base_url=probes_api.url, timeout=30) as client:
        assert client.get("/me").status_code == 401
        before = client.get("/me", headers=bearer(KEY_B)).json()
        assert client.post("/jobs", json=BODY, headers=bearer(KEY_B)).status_code == 202
        after = client.get("/me", headers=bearer(KEY_B)).json()
        low = client.get("/me", headers=bearer(KEY_LOW)).json()
        plain = client.get("/me", headers=bearer(KEY_A)).json()

    assert after["owner"] == owner_id(hash_key(KEY_B))
    assert (after["name"], after["admin"], after["auth"], after["weight"]) == (
        "tenant-b",
        False,
        True,
        2.0,
    )
    assert after["priorities"] == ["high", "normal", "low"]
    assert after["limits"] == {"submits_per_minute": 120, "max_queued": 100, "max_running": None}
    assert after["usage"]["queued"] == before["usage"]["queued"] + 1
    assert after["usage"]["submits_last_minute"] == before["usage"]["submits_last_minute"] + 1
    assert after["usage"]["running"] == 0
    assert (low["priorities"], low["limits"]["max_queued"], low["limits"]["max_running"]) == (
        ["low"],
        2,
        1,
    )
    assert (plain["name"], plain["priorities"]) == (None, ["normal", "low"])


def test_without_api_keys_every_priority_stays_open(api: TestClient) -> None:
    response = api.post("/jobs", json={**BODY, "priority": "high"})
    assert response.status_code == 202
    me = api.get("/me").json()
    assert (me["owner"], me["auth"], me["admin"]) == ("anonymous", False, True)
    assert me["priorities"] == ["high", "normal", "low"]


def test_a_bad_keys_file_line_is_refused_at_start_naming_the_line(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    path = tmp_path / "keys"
    path.write_text(f"{hash_key(KEY_A)}\n{hash_key(KEY_B)} priorities=urgent\n")
    with pytest.raises(ValueError, match=r"line 2: priorities 'urgent'"):
        make_settings(api_keys_file=path)


# --- 9. a NUL byte in a file name ------------------------------------------------------------


def test_a_nul_byte_in_a_file_name_is_422(api: TestClient) -> None:
    response = api.get("/files/jobs/x/%00.png")
    assert response.status_code == 422
    assert "NUL" in response.json()["error"]["message"]


# --- 10. what a key should not see -----------------------------------------------------------


def test_status_shows_job_ids_to_their_owner_and_pids_to_admins(
    probes_api: ApiProcess, redis_base_url: str
) -> None:
    """The probe: /status showed other tenants' running job ids, pids and hosts to any key."""
    with httpx.Client(base_url=probes_api.url, timeout=30) as client:
        job_a = client.post("/jobs", json=BODY, headers=bearer(KEY_A)).json()["id"]
        worker = WorkerInfo(
            name="probe-worker@gpu-host-7",
            state="busy",
            model="tiny-sd",
            pid=4242,
            current_job=job_a,
            current_batch=[job_a],
        )
        write_worker(redis.Redis.from_url(f"{redis_base_url}/{PROBES_DB}"), worker, ttl_s=60)

        def seen_by(key: str) -> dict[str, Any]:
            workers = client.get("/status", headers=bearer(key)).json()["workers"]
            [record] = [w for w in workers if w["name"] == worker.name]
            return record  # type: ignore[no-any-return]

        owner, other, admin = seen_by(KEY_A), seen_by(KEY_B), seen_by(KEY_ADMIN)
    assert (owner["current_job"], owner["current_batch"], owner["pid"]) == (job_a, [job_a], None)
    assert (other["current_job"], other["current_batch"], other["pid"]) == (None, [], None)
    assert (admin["current_job"], admin["pid"]) == (None, 4242)
    assert other["state"] == "busy"
    assert other["model"] == "tiny-sd"


def test_metrics_needs_the_metrics_token_when_one_is_set(probes_api: ApiProcess) -> None:
    url = f"{probes_api.url}/metrics"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers=bearer("wrong-token-0123456789"), timeout=10).status_code == 401
    assert httpx.get(url, headers=bearer(KEY_A), timeout=10).status_code == 401
    answer = httpx.get(url, headers=bearer(METRICS_TOKEN), timeout=10)
    assert answer.status_code == 200
    assert "darkroom_jobs_submitted_total" in answer.text


def test_prometheus_scrapes_with_the_token_file_of_the_scrape_configs(
    probes_api: ApiProcess, tmp_path: Path
) -> None:
    """As deploy/observability configures it: the token in a credentials file."""
    token_file = tmp_path / "metrics-token"
    token_file.write_text(METRICS_TOKEN + "\n")
    target = probes_api.url.removeprefix("http://")
    targets = {"darkroom-api": target, "tokenless": target}
    with running_prometheus(targets, tmp_path, {"darkroom-api": token_file}) as prometheus:
        wait_until(lambda: query(prometheus, 'up{job="darkroom-api"} == 1'), timeout_s=60)
        wait_until(lambda: query(prometheus, 'up{job="tokenless"} == 0'), timeout_s=60)
        assert query(prometheus, 'darkroom_jobs_submitted_total{job="darkroom-api"}')


# --- 11. image-to-image below one step -------------------------------------------------------


def pattern_png() -> bytes:
    return base64.b64decode(png((64, 64)))


def test_img2img_below_one_step_succeeds_on_every_api(
    client: TestClient, api_server: ApiProcess
) -> None:
    """The probe: int(steps x strength) == 0 failed with `cannot reshape tensor of 0
    elements` on /sdapi/v1/img2img (steps 3, denoising 0.2), /v1/images/edits
    (strength 0.3 at two steps) and POST /jobs (init_image, strength 0.3)."""
    webui = webuiapi.WebUIApi(baseurl=f"{api_server.url}/sdapi/v1", steps=3)
    result = webui.img2img(
        images=[Image.open(io.BytesIO(pattern_png()))],
        prompt="one step",
        denoising_strength=0.2,
        width=64,
        height=64,
        override_settings={"sd_model_checkpoint": "tiny-sd"},
    )
    assert [image.size for image in result.images] == [(64, 64)]

    with openai.OpenAI(base_url=f"{api_server.url}/v1", api_key="none", timeout=120) as sdk:
        edited = sdk.images.edit(
            model="tiny-sd",
            image=("source.png", pattern_png(), "image/png"),
            prompt="one step",
            response_format="b64_json",
            extra_body={"strength": 0.3, "num_inference_steps": 2},
        )
    assert edited.data
    assert edited.data[0].b64_json

    job = client.post("/jobs", json={**BODY, "init_image": png((64, 64)), "strength": 0.3})
    assert job.status_code == 202
    final = wait_until(
        lambda: (
            (j := client.get(f"/jobs/{job.json()['id']}").json())["status"]
            in {"succeeded", "failed"}
            and j
        ),
        timeout_s=120,
    )
    assert final["status"] == "succeeded", final["error"]
