"""One webhook POST: to a checked address only, and over within one deadline.

Connections go only to addresses checked at connect time (the address actually
dialled, so a DNS answer that changed since submit cannot point a delivery at
an internal host). WEBHOOK_TIMEOUT_S bounds the whole attempt, not each socket
operation: every resolve, connect, TLS handshake, write and read gets only the
time left, so a receiver that trickles its answer a byte at a time cannot hold
a delivery thread past it.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpcore

from shared.guarded_http import Deadline, GuardedBackend
from shared.jobs import utcnow
from shared.settings import Settings
from shared.webhooks import UnsafeAddress

MAX_RETRY_AFTER_S = 24 * 3600


@dataclass(frozen=True)
class Response:
    status_code: int | None
    error: str | None = None
    retry_after_s: float | None = None
    permanent: bool = False


def post(url: str, body: bytes, headers: dict[str, str], settings: Settings) -> Response:
    """POST `body` without following redirects; the answer, or why there is none."""
    timeout_s = settings.webhook_timeout_s
    deadline = Deadline(timeout_s)
    backend = GuardedBackend(settings.webhook_allow_private_networks, deadline)
    pool = httpcore.ConnectionPool(network_backend=backend)
    status = None
    try:
        with (
            pool,
            pool.stream("POST", url, headers=list(headers.items()), content=body) as response,
        ):
            status = response.status
            _read_at_most(response, settings.webhook_max_response_bytes)
            return Response(status, retry_after_s=_retry_after(response.headers))
    except UnsafeAddress as exc:
        return Response(None, f"refused: {exc}", permanent=True)
    except (httpcore.UnsupportedProtocol, ValueError) as exc:
        # Checked at submit; a URL stored before that check, or one httpcore reads
        # otherwise (it raises ValueError for a bad [host] or port), never works.
        return Response(None, f"refused: invalid URL: {exc}", permanent=True)
    except httpcore.TimeoutException:
        # Every socket operation had only the time left: any timeout is the deadline's.
        return Response(status, f"deadline passed: no complete answer within {timeout_s:g} s")
    except (httpcore.NetworkError, httpcore.ProtocolError, OSError) as exc:
        return Response(status, f"{type(exc).__name__}: {exc}"[:300])


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
