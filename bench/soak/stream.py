"""The chaos row's client: a steady stream of jobs, then every accepted job's record."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.jobs import STEPS, TERMINAL, WIDTH
from bench.stack import MODEL

# Longer than a failover with REDIS_MIN_REPLICAS_ACK (the API retries, then 503s).
REQUEST_TIMEOUT_S = 30.0
DRAIN_POLL_S = 2.0
# A job the API has not known this many polls in a row is gone for good.
GONE_ROUNDS = 3


@dataclass(frozen=True)
class Refusal:
    """A POST /jobs that did not end in a 202."""

    at: float  # time.time() when the request was sent
    waited_s: float
    # The HTTP status, or the transport error's class (ConnectError: the API is down).
    status: str
    message: str


@dataclass
class JobStream:
    """POSTs tiny-sd jobs at `rate_per_s` from a thread of its own, whatever the answers.

    A refusal is recorded and the stream goes on; after a stall (a slow answer)
    it resumes at the rate, without a burst to catch up.
    """

    api_url: str
    rate_per_s: float
    sent: int = 0
    accepted: dict[str, float] = field(default_factory=dict)  # job id -> time.time() sent
    refusals: list[Refusal] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="chaos-stream", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=REQUEST_TIMEOUT_S + 5)

    def _run(self) -> None:
        period = 1 / self.rate_per_s
        with httpx.Client(base_url=self.api_url, timeout=REQUEST_TIMEOUT_S) as http:
            next_at = time.monotonic()
            while not self._stop.is_set():
                self._submit(http)
                next_at = max(next_at + period, time.monotonic())
                self._stop.wait(next_at - time.monotonic())

    def _submit(self, http: httpx.Client) -> None:
        self.sent += 1
        body = {
            "model": MODEL,
            "prompt": f"chaos job {self.sent}: a lighthouse on a cliff at dusk",
            "seed": self.sent,
            "width": WIDTH,
            "height": WIDTH,
            "steps": STEPS,
        }
        sent, clock = time.time(), time.monotonic()
        try:
            response = http.post("/jobs", json=body)
        except httpx.HTTPError as exc:
            waited = time.monotonic() - clock
            self.refusals.append(Refusal(sent, waited, type(exc).__name__, str(exc) or repr(exc)))
            return
        waited = time.monotonic() - clock
        if response.status_code == 202:
            self.accepted[response.json()["id"]] = sent
        else:
            status = str(response.status_code)
            self.refusals.append(Refusal(sent, waited, status, _message(response)))


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def await_terminal(
    api_url: str, ids: list[str], timeout_s: float
) -> dict[str, dict[str, Any] | None]:
    """Each job's last record seen (None: 404), polling until every job is terminal or
    gone (404 in GONE_ROUNDS rounds in a row) or `timeout_s` passed."""
    last: dict[str, dict[str, Any] | None] = {}
    missing: Counter[str] = Counter()  # consecutive 404s
    pending = list(ids)
    deadline = time.monotonic() + timeout_s
    with httpx.Client(base_url=api_url, timeout=REQUEST_TIMEOUT_S) as http:
        while pending and time.monotonic() < deadline:
            still = []
            for job_id in pending:
                status = _read(http, job_id, last)
                missing[job_id] = missing[job_id] + 1 if status == 404 else 0
                record = last.get(job_id)
                done = record is not None and record["status"] in TERMINAL
                if not done and missing[job_id] < GONE_ROUNDS:
                    still.append(job_id)
            pending = still
            if pending:
                time.sleep(DRAIN_POLL_S)
    return {job_id: last.get(job_id) for job_id in ids}


def _read(http: httpx.Client, job_id: str, last: dict[str, dict[str, Any] | None]) -> int | None:
    """GET the job into `last` (None on a 404); the status, None when the API is away."""
    try:
        response = http.get(f"/jobs/{job_id}")
    except httpx.HTTPError:
        return None
    if response.status_code == 404:
        last[job_id] = None
    elif response.status_code == 200:
        last[job_id] = response.json()
    return response.status_code
