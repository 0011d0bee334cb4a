"""Adapters a key brings by URL, on the session's stack: the job storage on S3 (moto's
server), the API over HTTP, the tiny-sd worker. An s3:// URL is read with the
storage's credentials; an http URL on this machine (private networks allowed, as
this stack's WEBHOOK_ALLOW_PRIVATE_NETWORKS says) goes through the guarded fetch;
the adapter is kept in the bucket under loras/, the worker reads it from there."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from darkroom.stack import free_port
from tests.conftest import S3_BUCKET
from tests.support.polling import wait_until
from tests.support.processes import ApiProcess
from worker.tiny_lora import make_sd_lora


@pytest.fixture(scope="module")
def adapter(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sd_lora(tiny_model_dir, tmp_path_factory.mktemp("remote") / "a.safetensors", 5)


@pytest.fixture(scope="module")
def served(adapter: Path) -> Iterator[str]:
    """The adapter over plain HTTP on 127.0.0.1."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(adapter.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{adapter.name}"
    server.shutdown()


@pytest.fixture(scope="module")
def http_client(api_server: ApiProcess, workers: object) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server.url, timeout=60) as client:
        yield client


def bucket_keys(s3_endpoint: str, prefix: str) -> list[str]:
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket=S3_BUCKET, Prefix=prefix
    )
    return [o["Key"] for o in listed.get("Contents", [])]


def test_an_adapter_from_s3_runs_from_the_bucket_and_leaves_with_its_delete(
    http_client: httpx.Client, s3_endpoint: str, adapter: Path
) -> None:
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(
        Bucket=S3_BUCKET, Key="incoming/a.safetensors", Body=adapter.read_bytes()
    )
    url = f"s3://{S3_BUCKET}/incoming/a.safetensors"
    made = http_client.post("/loras", json={"name": "from-s3", "url": url})
    assert made.status_code == 201, made.text
    assert made.json()["base"] == "sd"
    assert len(bucket_keys(s3_endpoint, "e2e/loras/")) == 1  # kept under the storage's prefix

    body = {"prompt": "x", "model": "tiny-sd", "loras": [{"name": "from-s3"}], "steps": 2}
    job_id = http_client.post("/jobs", json=body).json()["id"]
    job = wait_until(
        lambda: (
            (j := http_client.get(f"/jobs/{job_id}").json())["status"] in ("succeeded", "failed")
            and j
        ),
        timeout_s=120,
        what="the job with the adapter from S3",
    )
    assert job["status"] == "succeeded", job

    assert http_client.delete("/loras/from-s3").status_code == 204
    assert bucket_keys(s3_endpoint, "e2e/loras/") == []


def test_an_adapter_over_http_is_fetched_when_private_networks_are_allowed(
    http_client: httpx.Client, served: str, s3_endpoint: str
) -> None:
    made = http_client.post("/loras", json={"name": "over-http", "url": served})
    assert made.status_code == 201, made.text
    missing = http_client.post("/loras", json={"name": "nothing", "url": served + ".gone"})
    assert missing.status_code == 422
    assert "answered 404" in missing.json()["error"]["message"]
    assert http_client.delete("/loras/over-http").status_code == 204
