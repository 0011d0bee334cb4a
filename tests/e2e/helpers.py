"""Polling and image checks shared by the end-to-end tests."""

from __future__ import annotations

import io
from typing import Any

import httpx
from fastapi.testclient import TestClient
from PIL import Image

from tests.support.polling import wait_until

TERMINAL = {"succeeded", "failed", "canceled"}


def wait_for(client: TestClient, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        return job if job["status"] in TERMINAL else None

    return wait_until(
        finished, timeout_s, what=lambda: f"job {job_id} ({client.get(f'/jobs/{job_id}').json()})"
    )


def submit(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def download_png(url: str) -> tuple[bytes, Image.Image]:
    """Fetch an image URL over real HTTP (presigned S3) and decode it."""
    response = httpx.get(url, timeout=10)
    response.raise_for_status()
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return response.content, image
