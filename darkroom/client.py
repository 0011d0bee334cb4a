"""A small HTTP client for darkroom's API: the CLI, the web page, the demo, the benchmark.

It speaks only HTTP: whatever uses it needs no Redis, torch or worker code.
Every failure is an `ApiError` whose message a person can act on: what the API
refused and why, or that it could not be reached at all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httpx

TERMINAL = {"succeeded", "failed", "canceled"}
# Highest first: how priorities are offered.
PRIORITIES = ("high", "normal", "low")
DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_PORTS = {"http": 80, "https": 443}
# The keys of darkroom's own error answers (api/errors.py). Only such an answer's
# message is shown: any other body may be a page of whatever server answered.
ERROR_ANSWER_KEYS = {"error", "detail"}
ERROR_REQUIRED_KEYS = {"type", "message"}
ERROR_OPTIONAL_KEYS = {"field"}


def default_api_url(environ: Mapping[str, str] | None = None) -> str:
    """DARKROOM_API_URL, else DARKROOM_URL (its older name), else the local API."""
    env = os.environ if environ is None else environ
    return env.get("DARKROOM_API_URL") or env.get("DARKROOM_URL") or DEFAULT_API_URL


def default_api_key(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return env.get("DARKROOM_API_KEY") or None


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


@dataclass(frozen=True)
class LivePreview:
    """GET /jobs/{id}/preview: one image's WebP, the step it shows, the job's image count."""

    webp: bytes
    step: int
    steps: int
    images: int


class ApiUnreachable(ApiError):
    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(None, f"cannot reach the darkroom API at {base_url} ({reason})")


Origin = tuple[str, str, int | None]


def origin(url: str | httpx.URL) -> Origin:
    """Scheme, host and port: who receives a request to `url` (the browser's same-origin rule).

    Raises httpx.InvalidURL for what is not a URL.
    """
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port or DEFAULT_PORTS.get(parsed.scheme)


class DarkroomClient:
    def __init__(
        self, base_url: str | None = None, api_key: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.base_url = (base_url or default_api_url()).rstrip("/")
        self.origin = origin(self.base_url)
        # Never a default header of the session: one request to another origin
        # (an image URL an answer named) would carry it there.
        self._api_key = api_key
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s)

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
        """Up to `limit` of the caller's jobs, newest first, following `next_cursor`
        past the short pages a rarely matching `status` may answer."""
        jobs: list[dict[str, Any]] = []
        params: dict[str, Any] = {"status": status} if status else {}
        while len(jobs) < limit:
            page = self._call("GET", "/jobs", params={**params, "limit": limit - len(jobs)})
            jobs += page["jobs"]
            if page.get("next_cursor") is None:
                break
            params["cursor"] = page["next_cursor"]
        return jobs

    def models(self) -> dict[str, Any]:
        return self._call("GET", "/models")

    def loras(self) -> list[dict[str, Any]]:
        """The LoRA adapters this key may use: the registry's and its own."""
        return list(self._call("GET", "/loras")["loras"])

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/status")

    def me(self) -> dict[str, Any]:
        """The caller's key: its name, the priorities it may use, its limits and usage."""
        return self._call("GET", "/me")

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

    def preview(self, job_id: str, index: int = 0) -> LivePreview | None:
        """The job's latest live preview (WebP); None while there is none. Asking marks
        the job watched: the worker makes previews while someone asks."""
        try:
            response = self._send("GET", f"/jobs/{job_id}/preview", params={"index": index})
        except ApiError as exc:
            if exc.status_code == 404:
                return None
            raise
        headers = response.headers
        return LivePreview(
            response.content,
            int(headers.get("X-Preview-Step", 0)),
            int(headers.get("X-Preview-Steps", 0)),
            int(headers.get("X-Preview-Images", 1)),
        )

    def download(self, url: str) -> bytes:
        """An image's bytes. Its URL may point elsewhere (presigned S3): the key goes
        only to the API's own origin."""
        return self._send("GET", url).content

    def sends_key_to(self, url: str | httpx.URL) -> bool:
        """Whether a request to `url` carries the API key: only to the API's exact origin
        (scheme, host and port), never to a URL that merely starts like it."""
        if not self._api_key:
            return False
        try:
            return origin(url) == self.origin
        except httpx.InvalidURL:
            return False

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._send(method, path, **kwargs).json()  # type: ignore[no-any-return]

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Every request goes through here: the one place that decides who gets the key."""
        try:
            request = self.http.build_request(method, url, **kwargs)
        except httpx.InvalidURL as exc:
            raise ApiError(None, f"not a valid URL: {url} ({exc})") from exc
        if self.sends_key_to(request.url):
            request.headers["Authorization"] = f"Bearer {self._api_key}"
        try:
            response = self.http.send(request)
        except httpx.TransportError as exc:
            raise ApiUnreachable(_where(request.url), _reason(exc)) from exc
        _raise_for_error(response)
        return response


def allowed_priorities(client: DarkroomClient) -> tuple[str, ...]:
    """The priorities the caller's key may use (GET /me), highest first.

    An API from before GET /me (404) judges each job itself: every priority is offered.
    """
    try:
        me = client.me()
    except ApiError as exc:
        if exc.status_code == 404:
            return PRIORITIES
        raise
    return tuple(priority for priority in PRIORITIES if priority in me["priorities"])


def _where(url: httpx.URL) -> str:
    """A request's scheme, host and port, for messages (a presigned URL's query is a credential)."""
    return str(url.copy_with(path="/", query=None, fragment=None)).rstrip("/")


def _reason(exc: httpx.TransportError) -> str:
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or no such host"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return str(exc) or type(exc).__name__


def _raise_for_error(response: httpx.Response) -> None:
    if response.is_success:
        return
    message = darkroom_error_message(response) or _status_only(response.status_code)
    retry_after = response.headers.get("Retry-After")
    raise ApiError(
        response.status_code,
        message,
        retry_after_s=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )


def darkroom_error_message(response: httpx.Response) -> str | None:
    """The message of darkroom's own error shape
    `{"error": {"type", "message", "field"?}, "detail"}`; None for any other answer."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or set(body) != ERROR_ANSWER_KEYS:
        return None
    error = body["error"]
    if not isinstance(error, dict):
        return None
    if not ERROR_REQUIRED_KEYS <= set(error) <= ERROR_REQUIRED_KEYS | ERROR_OPTIONAL_KEYS:
        return None
    fields = [error["type"], error["message"], error.get("field", "")]
    if not all(isinstance(value, str) for value in fields):
        return None
    return str(error["message"])


def _status_only(status_code: int) -> str:
    """What a non-darkroom error answer says: its status, never its body (which may be any
    page of any server the request reached)."""
    try:
        phrase = HTTPStatus(status_code).phrase
    except ValueError:
        phrase = "unexpected status"
    return f"{phrase} (not a darkroom error answer; its body is not shown)"
