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


# IPv6 ranges whose last 32 bits are an IPv4 address that the packet ends up at
# (through a translator or a tunnel): IPv4-compatible (deprecated, RFC 4291),
# IPv4-translated (SIIT, RFC 2765) and the well-known NAT64 prefix (RFC 6052).
_IPV4_IN_LAST_32_BITS = [
    ipaddress.IPv6Network("::/96"),
    ipaddress.IPv6Network("::ffff:0:0:0/96"),
    ipaddress.IPv6Network("64:ff9b::/96"),
]
# Local-use NAT64 (RFC 8215): where its IPv4 sits depends on the prefix length
# each network picks, so none of it is taken; it is not globally reachable anyway.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: mapped, compatible, translated,
    NAT64, 6to4 (2002::/16) and Teredo (2001::/32: its server and its client,
    whose address is stored XOR-ed)."""
    found = [ip.ipv4_mapped] if ip.ipv4_mapped is not None else []
    if any(ip in net for net in _IPV4_IN_LAST_32_BITS):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found += ip.teredo
    return found


def is_public(address: str) -> bool:
    """Whether a webhook may be sent to `address`: globally reachable unicast, and
    so is every IPv4 address embedded in it (each is where the packet may end up)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return _globally_reachable(ip)
    if ip.ipv4_mapped is not None:
        # The kernel dials the IPv4 address itself: only it counts.
        return _globally_reachable(ip.ipv4_mapped)
    if ip in _LOCAL_NAT64:
        return False
    return _globally_reachable(ip) and all(map(_globally_reachable, embedded_ipv4(ip)))


def _globally_reachable(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # is_global is False for loopback, private, link-local (cloud metadata),
    # CGNAT (100.64/10), reserved and unspecified ranges.
    return ip.is_global and not ip.is_multicast


def resolve_allowed(host: str, port: int, allow_private: bool) -> list[str]:
    """Every address `host` resolves to, or UnsafeAddress if any is not allowed."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        # UnicodeError: a label IDNA cannot encode (empty, over 63 characters).
        raise UnsafeAddress(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        blocked = [a for a in addresses if not is_public(a)]
        if blocked:
            raise UnsafeAddress(f"{host} resolves to a non-public address ({', '.join(blocked)})")
    return addresses


def check_webhook_url(url: str, allow_private: bool) -> None:
    """Refuse (422) a webhook URL that is not http(s) or does not resolve to public addresses."""
    host, port = _host_and_port(url)
    try:
        resolve_allowed(host, port, allow_private)
    except UnsafeAddress as exc:
        hint = "" if allow_private else " (WEBHOOK_ALLOW_PRIVATE_NETWORKS=true allows it)"
        raise InvalidRequest(f"webhook refused: {exc}{hint}", "webhook") from None


def _host_and_port(url: str) -> tuple[str, int]:
    try:
        # Both raise ValueError: urlsplit for a bad [IPv6] host, .port when out of range.
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequest(f"webhook is not a valid URL: {exc}", "webhook") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise InvalidRequest("webhook must be an http(s) URL with a host", "webhook")
    if parts.username or parts.password:
        raise InvalidRequest("webhook URL must not carry credentials", "webhook")
    if port == 0:
        raise InvalidRequest("webhook is not a valid URL: port 0 (use 1-65535)", "webhook")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


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
    if attempt.outcome == "delivered":
        pipe.hset(state_key(job_id), _delivered_field(attempt.event_id), "1")
        pipe.expire(state_key(job_id), ttl_s)
    pipe.execute()


def receiver_gone(client: redis.Redis, job_id: str) -> bool:
    """A receiver answered 410 Gone: no more events for this job."""
    return bool(client.hexists(state_key(job_id), "gone"))


def settled(client: redis.Redis, job_id: str, event_id: str) -> str | None:
    """Whether an event needs no attempt: "gone" (the receiver answered 410),
    "delivered" (it was, and its message was handed out twice, as after a broker
    restart), or None: send it."""
    gone, delivered = client.hmget(state_key(job_id), ["gone", _delivered_field(event_id)])
    if gone:
        return "gone"
    return "delivered" if delivered else None


def _delivered_field(event_id: str) -> str:
    return f"delivered:{event_id}"


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
