"""Deliver one webhook attempt: sign, POST (worker.webhook_http), record the outcome.

Runs on the light webhook worker, never on a GPU worker. A delivery runs only
while its API key has fewer than WEBHOOK_MAX_PER_KEY running (worker.webhook_leases);
otherwise it goes back to the retry set for a moment, without holding a thread
and without counting as an attempt, so one tenant's slow receivers never take
every delivery thread.
"""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any

import redis

from shared.apikeys import ANONYMOUS
from shared.constants import JOB_KEY_PREFIX, WEBHOOK_RETRY_KEY
from shared.jobs import JobStatus, WebhookAttempt, utcnow
from shared.settings import Settings
from shared.webhooks import EVENT_TYPES, record_attempt, settled, signature_header
from worker.webhook_http import Response, post
from worker.webhook_leases import LEASE_MARGIN_S, KeyLeases
from worker.webhook_metrics import (
    WEBHOOK_DEFERRED,
    WEBHOOK_DELIVERIES,
    WEBHOOK_DELIVERY_SECONDS,
)

log = logging.getLogger(__name__)

USER_AGENT = "darkroom-webhooks/0.1"
# A delivery whose key has WEBHOOK_MAX_PER_KEY running waits about this long in
# the retry set (jittered, so a tenant's waiting deliveries do not come back
# together), then tries for a lease again.
DEFER_S = 1.0


class Deliverer:
    def __init__(self, client: redis.Redis, settings: Settings):
        self.redis = client
        self.settings = settings
        self.leases = KeyLeases(
            client, settings.webhook_max_per_key, settings.webhook_timeout_s + LEASE_MARGIN_S
        )

    def deliver(self, delivery: dict[str, Any]) -> str:
        """One attempt, or none: "deferred" when its key has its fill of deliveries
        running, "duplicate" when this event was delivered already (a message
        handed out twice), "gone" after a 410. Schedules the next attempt when it
        failed. Returns the outcome."""
        earlier = settled(self.redis, delivery["job_id"], delivery["event_id"])
        if earlier is not None:
            return self._skip(delivery, earlier)
        if self._stale(delivery):
            return "stale"
        # A delivery queued before deliveries carried their owner: the shared allowance.
        owner = delivery.get("owner", ANONYMOUS)
        with self.leases.hold(owner) as running:
            if not running:
                self._defer(delivery)
                return "deferred"
            with WEBHOOK_DELIVERY_SECONDS.time():
                response = self._send(delivery)
        return self._record(delivery, response)

    def _stale(self, delivery: dict[str, Any]) -> bool:
        """A progress event of a job that has ended since (it waited for its key's
        allowance, or for a retry): sent now, it would reach the receiver after the
        job's final event and say the job still runs. Dropped, with a log line."""
        if delivery["event"] != EVENT_TYPES["progress"]:
            return False
        status = self.redis.hget(JOB_KEY_PREFIX + delivery["job_id"], "status")
        if status is None or not JobStatus(json.loads(status)).is_terminal():
            return False
        log.info(
            "webhook %s %s for job %s dropped: the job has ended since",
            delivery["event"],
            delivery["event_id"],
            delivery["job_id"],
        )
        return True

    def _skip(self, delivery: dict[str, Any], earlier: str) -> str:
        if earlier == "gone":
            WEBHOOK_DELIVERIES.labels("gone").inc()
            reason = "the receiver answered 410"
        else:
            earlier, reason = "duplicate", "delivered already"
        log.info(
            "webhook %s %s for job %s skipped: %s",
            delivery["event"],
            delivery["event_id"],
            delivery["job_id"],
            reason,
        )
        return earlier

    def _record(self, delivery: dict[str, Any], response: Response) -> str:
        job_id, attempt = delivery["job_id"], int(delivery["attempt"])
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
            response.error or response.status_code,
        )
        if outcome == "retrying":
            self._schedule_retry(delivery, response)
        return outcome

    def _defer(self, delivery: dict[str, Any]) -> None:
        WEBHOOK_DEFERRED.inc()
        due = time.time() + DEFER_S * random.uniform(0.5, 1.5)
        self.redis.zadd(WEBHOOK_RETRY_KEY, {json.dumps(delivery): due})

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
        if code == 410:
            return "gone"
        # A 2xx whose answer did not finish in time (a trickle) is no delivery.
        if code is not None and 200 <= code < 300 and response.error is None:
            return "delivered"
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
