"""A small HTTP client for darkroom's API: the CLI, the web page, the demo, the benchmark.

It speaks only HTTP: whatever uses it needs no Redis, torch or worker code.
Every failure is an `ApiError` whose message a person can act on: what the API
refused and why, or that it could not be reached at all.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "canceled"}
DEFAULT_API_URL = "http://127.0.0.1:8000"


def default_api_url() -> str:
    """DARKROOM_API_URL, else DARKROOM_URL (its older name), else the local API."""
    return os.environ.get("DARKROOM_API_URL") or os.environ.get("DARKROOM_URL") or DEFAULT_API_URL


def default_api_key() -> str | None:
    return os.environ.get("DARKROOM_API_KEY") or None


class ApiError(RuntimeError):
    """The API refused a call (`status_code` set) or could not be reached (None)."""

    def __init__(
        self, status_code: int | None, message: str, retry_after_s: float | None = None
    ) -> None:
        prefix = f"HTTP {status_code}: " if status_code is not None else ""
        super().__init__(prefix + message)
        self.status_code = status_code
        self.message = message
        # From Retry-After on a 429 or 503: when trying again makes sense.
        self.retry_after_s = retry_after_s


class ApiUnreachable(ApiError):
    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(None, f"cannot reach the darkroom API at {base_url} ({reason})")


class DarkroomClient:
    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.base_url = (base_url or default_api_url()).rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> DarkroomClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/jobs", json=body)

    def get(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}")

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job_id}/cancel")

    def list_jobs(self, limit: int = 20, status: str | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return self._call("GET", "/jobs", params=params)["jobs"]  # type: ignore[no-any-return]

    def models(self) -> dict[str, Any]:
        return self._call("GET", "/models")

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/status")

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
        # Image URLs may point elsewhere (presigned S3): fetch them as given,
        # sending the API key only to the API itself.
        try:
            if url.startswith(self.base_url):
                response = self.http.get(url)
            else:
                response = httpx.get(url, timeout=self.http.timeout)
        except httpx.TransportError as exc:
            raise ApiUnreachable(url, _reason(exc)) from exc
        _raise_for_error(response)
        return response.content

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ApiUnreachable(self.base_url, _reason(exc)) from exc
        _raise_for_error(response)
        return response.json()  # type: ignore[no-any-return]


def _reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or no such host"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return str(exc) or type(exc).__name__


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:500] or response.reason_phrase
    retry_after = response.headers.get("Retry-After")
    raise ApiError(
        response.status_code,
        message,
        retry_after_s=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )
