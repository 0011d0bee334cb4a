"""Webhooks: Standard Webhooks signatures, URL safety, and the per-job delivery log.

Signing follows https://www.standardwebhooks.com: `webhook-id`,
`webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`, keyed by the base64 part of a `whsec_...` secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import redis

from shared.constants import WEBHOOK_LOG_KEY_PREFIX, WEBHOOK_STATE_KEY_PREFIX
from shared.errors import InvalidRequest
from shared.jobs import JobRecord, WebhookAttempt, WebhookInfo

EVENT_TYPES = {"start": "job.started", "progress": "job.progress", "completed": "job.completed"}


# --- signing -----------------------------------------------------------------


def secret_key(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret."""
    if not secret.startswith("whsec_"):
        raise ValueError("webhook secrets look like whsec_<base64>")
    return base64.b64decode(secret.removeprefix("whsec_"))


def signature_header(secrets: list[str], msg_id: str, timestamp: int, body: str) -> str:
    """One `v1,<sig>` per secret, space-separated: during a rotation both sign."""
    content = f"{msg_id}.{timestamp}.{body}".encode()
    return " ".join(
        "v1," + base64.b64encode(hmac.new(secret_key(s), content, hashlib.sha256).digest()).decode()
        for s in secrets
    )


# --- where a webhook may go ----------------------------------------------------


class UnsafeAddress(Exception):
    """A webhook host resolves to an address darkroom must not call."""


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # is_global is False for loopback, private, link-local (cloud metadata),
    # CGNAT (100.64/10), reserved and unspecified ranges.
    return ip.is_global and not ip.is_multicast


def resolve_allowed(host: str, port: int, allow_private: bool) -> list[str]:
    """Every address `host` resolves to, or UnsafeAddress if any is not allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UnsafeAddress(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        blocked = [a for a in addresses if not is_public(a)]
        if blocked:
            raise UnsafeAddress(f"{host} resolves to a non-public address ({', '.join(blocked)})")
    return addresses


def check_webhook_url(url: str, allow_private: bool) -> None:
    """Refuse (422) a webhook URL that is not http(s) or does not resolve to public addresses."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidRequest("webhook must be an http(s) URL with a host", "webhook")
    if parts.username or parts.password:
        raise InvalidRequest("webhook URL must not carry credentials", "webhook")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        resolve_allowed(parts.hostname, port, allow_private)
    except UnsafeAddress as exc:
        hint = "" if allow_private else " (WEBHOOK_ALLOW_PRIVATE_NETWORKS=true allows it)"
        raise InvalidRequest(f"webhook refused: {exc}{hint}", "webhook") from None


# --- the delivery log of a job ------------------------------------------------


def log_key(job_id: str) -> str:
    return WEBHOOK_LOG_KEY_PREFIX + job_id


def state_key(job_id: str) -> str:
    return WEBHOOK_STATE_KEY_PREFIX + job_id


def record_attempt(client: redis.Redis, job_id: str, attempt: WebhookAttempt, ttl_s: int) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.rpush(log_key(job_id), attempt.model_dump_json())
    pipe.expire(log_key(job_id), ttl_s)
    # The log holds every outcome; the state hash only what is read from it.
    if attempt.outcome == "gone":
        pipe.hset(state_key(job_id), "gone", "1")
        pipe.expire(state_key(job_id), ttl_s)
    pipe.execute()


def receiver_gone(client: redis.Redis, job_id: str) -> bool:
    """A receiver answered 410 Gone: no more events for this job."""
    return bool(client.hexists(state_key(job_id), "gone"))


def webhook_info(record: JobRecord, log: list[Any]) -> WebhookInfo | None:
    """The job's webhook section from its delivery log (the raw list at log_key)."""
    if record.webhook is None:
        return None
    attempts = [WebhookAttempt.model_validate(json.loads(item)) for item in log]
    return WebhookInfo(
        url=record.webhook,
        events_filter=record.webhook_events_filter,
        state=attempts[-1].outcome if attempts else "pending",
        attempts=attempts,
    )
