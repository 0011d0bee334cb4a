"""A small HTTP client for darkroom's API: `darkroom submit`, the demo, the benchmark."""

from __future__ import annotations

import time
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "canceled"}


class DarkroomClient:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 30.0):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        response = self.http.post("/jobs", json=body)
        _raise_for_error(response)
        return response.json()  # type: ignore[no-any-return]

    def get(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/jobs/{job_id}")
        _raise_for_error(response)
        return response.json()  # type: ignore[no-any-return]

    def wait(
        self, job_id: str, timeout_s: float = 300.0, interval_s: float = 0.1
    ) -> dict[str, Any]:
        """Poll until the job is terminal; raises TimeoutError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get(job_id)
            if job["status"] in TERMINAL:
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s}s")
            time.sleep(interval_s)

    def download(self, url: str) -> bytes:
        # Image URLs may point elsewhere (presigned S3): fetch them as given.
        response = self.http.get(url) if url.startswith(str(self.http.base_url)) else httpx.get(url)
        response.raise_for_status()
        return response.content


class ApiError(RuntimeError):
    def __init__(self, status_code: int, message: str):
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:500]
    raise ApiError(response.status_code, message)
