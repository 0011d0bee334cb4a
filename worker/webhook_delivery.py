"""Deliver one webhook attempt: sign, POST without following redirects, record the outcome.

Runs on the light webhook worker, never on a GPU worker. Connections go only to
addresses checked at connect time (the address actually dialled, so a DNS
answer that changed since submit cannot point a delivery at an internal host).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpcore
import redis

from shared.constants import WEBHOOK_RETRY_KEY
from shared.jobs import WebhookAttempt, utcnow
from shared.settings import Settings
from shared.webhooks import (
    UnsafeAddress,
    receiver_gone,
    record_attempt,
    resolve_allowed,
    signature_header,
)
from worker.webhook_metrics import WEBHOOK_DELIVERIES, WEBHOOK_DELIVERY_SECONDS

log = logging.getLogger(__name__)

USER_AGENT = "darkroom-webhooks/0.1"
MAX_RETRY_AFTER_S = 24 * 3600


class GuardedBackend(httpcore.SyncBackend):
    """Resolves and checks the host itself, then dials the checked address."""

    def __init__(self, allow_private: bool):
        self.allow_private = allow_private

    def connect_tcp(
        self, host: str, port: int, *args: Any, **kwargs: Any
    ) -> httpcore.NetworkStream:
        address = resolve_allowed(host, port, self.allow_private)[0]
        # TLS still verifies and sends SNI for the URL's host name.
        return super().connect_tcp(address, port, *args, **kwargs)


@dataclass(frozen=True)
class Response:
    status_code: int | None
    error: str | None = None
    retry_after_s: float | None = None
    permanent: bool = False


def post(url: str, body: bytes, headers: dict[str, str], settings: Settings) -> Response:
    timeout = settings.webhook_timeout_s
    pool = httpcore.ConnectionPool(
        network_backend=GuardedBackend(settings.webhook_allow_private_networks)
    )
    try:
        with (
            pool,
            pool.stream(
                "POST",
                url,
                headers=list(headers.items()),
                content=body,
                extensions={"timeout": {k: timeout for k in ("connect", "read", "write", "pool")}},
            ) as response,
        ):
            _read_at_most(response, settings.webhook_max_response_bytes)
            return Response(response.status, retry_after_s=_retry_after(response.headers))
    except UnsafeAddress as exc:
        return Response(None, f"refused: {exc}", permanent=True)
    except (
        httpcore.TimeoutException,
        httpcore.NetworkError,
        httpcore.ProtocolError,
        OSError,
    ) as exc:
        return Response(None, f"{type(exc).__name__}: {exc}"[:300])


def _read_at_most(response: httpcore.Response, limit: int) -> None:
    seen = 0
    for chunk in response.iter_stream():
        seen += len(chunk)
        if seen >= limit:
            break


def _retry_after(headers: list[tuple[bytes, bytes]]) -> float | None:
    for name, value in headers:
        if name.lower() != b"retry-after":
            continue
        text = value.decode(errors="replace").strip()
        if text.isdigit():
            return min(float(text), MAX_RETRY_AFTER_S)
        try:
            delta = (parsedate_to_datetime(text) - utcnow()).total_seconds()
        except (TypeError, ValueError):
            return None
        return min(max(delta, 0.0), MAX_RETRY_AFTER_S)
    return None


class Deliverer:
    def __init__(self, client: redis.Redis, settings: Settings):
        self.redis = client
        self.settings = settings

    def deliver(self, delivery: dict[str, Any]) -> str:
        """One attempt; schedules the next when it failed. Returns the outcome."""
        job_id, attempt = delivery["job_id"], int(delivery["attempt"])
        if receiver_gone(self.redis, job_id):
            log.info(
                "webhook %s for job %s skipped: receiver answered 410", delivery["event"], job_id
            )
            WEBHOOK_DELIVERIES.labels("gone").inc()
            return "gone"
        with WEBHOOK_DELIVERY_SECONDS.time():
            response = self._send(delivery)
        outcome = self._outcome(response, attempt)
        WEBHOOK_DELIVERIES.labels(outcome).inc()
        record_attempt(
            self.redis,
            job_id,
            WebhookAttempt(
                event_id=delivery["event_id"],
                event=delivery["event"],
                attempt=attempt,
                at=utcnow(),
                status_code=response.status_code,
                error=response.error,
                outcome=outcome,
            ),
            self.settings.job_ttl_s,
        )
        log.info(
            "webhook %s %s for job %s, attempt %d: %s (%s)",
            delivery["event"],
            delivery["event_id"],
            job_id,
            attempt,
            outcome,
            response.status_code or response.error,
        )
        if outcome == "retrying":
            self._schedule_retry(delivery, response)
        return outcome

    def _send(self, delivery: dict[str, Any]) -> Response:
        timestamp = int(time.time())
        body = delivery["body"]
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": delivery["event_id"],
            "webhook-timestamp": str(timestamp),
        }
        secrets = self.settings.webhook_secrets
        if secrets:
            headers["webhook-signature"] = signature_header(
                secrets, delivery["event_id"], timestamp, body
            )
        return post(delivery["url"], body.encode(), headers, self.settings)

    def _outcome(self, response: Response, attempt: int) -> str:
        code = response.status_code
        if code is not None and 200 <= code < 300:
            return "delivered"
        if code == 410:
            return "gone"
        if response.permanent or attempt > len(self.settings.webhook_retry_delays_s):
            return "failed"
        return "retrying"

    def _schedule_retry(self, delivery: dict[str, Any], response: Response) -> None:
        delay = self.settings.webhook_retry_delays_s[int(delivery["attempt"]) - 1]
        delay *= random.uniform(0.8, 1.2)  # jitter: retries of many jobs do not arrive together
        if response.retry_after_s is not None:
            delay = max(delay, response.retry_after_s)
        retry = {**delivery, "attempt": int(delivery["attempt"]) + 1}
        self.redis.zadd(WEBHOOK_RETRY_KEY, {json.dumps(retry): time.time() + delay})


def pop_due_retries(client: redis.Redis, limit: int = 100) -> list[dict[str, Any]]:
    """Take the deliveries whose retry time has come. ZREM decides who owns each one,
    so several webhook workers can poll the same set."""
    due: list[Any] = client.zrangebyscore(
        WEBHOOK_RETRY_KEY, "-inf", time.time(), start=0, num=limit
    )
    taken = []
    for member in due:
        if client.zrem(WEBHOOK_RETRY_KEY, member):
            taken.append(json.loads(member))
    return taken
