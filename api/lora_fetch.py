"""Fetch an adapter a key names by URL (POST /loras with `{name, url}`).

https URLs go through the webhook guard (shared/guarded_http.py): the host is
resolved and checked at connect time, only public addresses are dialled (unless
WEBHOOK_ALLOW_PRIVATE_NETWORKS), the whole download has one deadline, and no
more than LORA_MAX_BYTES is read. s3:// URLs are read with the job storage's
credentials (S3_ENDPOINT_URL and the AWS_* variables).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpcore

from shared.errors import InvalidRequest, QuotaExceeded, StorageError
from shared.guarded_http import Deadline, GuardedBackend
from shared.settings import Settings
from shared.storage import Storage, read_s3_url
from shared.webhooks import UnsafeAddress, check_webhook_url

# The longest a download may take, resolve to last byte.
FETCH_DEADLINE_S = 300.0


def fetch_lora(url: str, settings: Settings, storage: Storage) -> bytes:
    """The bytes at `url`; InvalidRequest (422, field `url`) for a URL that may not be
    fetched or did not answer with a file, QuotaExceeded past LORA_MAX_BYTES."""
    scheme = urlsplit(url).scheme
    if scheme == "s3":
        return _from_s3(url, storage)
    allow_private = settings.webhook_allow_private_networks
    # Plain http only where private networks are allowed (a test's or a lab's server).
    if scheme != "https" and not (scheme == "http" and allow_private):
        raise InvalidRequest("url must be https:// or s3://", "url")
    try:
        check_webhook_url(url, allow_private)
    except InvalidRequest as exc:
        raise InvalidRequest(str(exc).replace("webhook", "url"), "url") from None
    deadline = Deadline(FETCH_DEADLINE_S)
    pool = httpcore.ConnectionPool(network_backend=GuardedBackend(allow_private, deadline))
    try:
        with pool, pool.stream("GET", url) as response:
            if response.status != 200:
                raise InvalidRequest(
                    f"fetching the adapter: {url} answered {response.status}", "url"
                )
            return _read_capped(response, settings.lora_max_bytes)
    except UnsafeAddress as exc:
        raise InvalidRequest(f"url refused: {exc}", "url") from None
    except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
        raise InvalidRequest(f"fetching the adapter failed: {type(exc).__name__}", "url") from None


def _read_capped(response: httpcore.Response, limit: int) -> bytes:
    chunks, seen = [], 0
    for chunk in response.iter_stream():
        seen += len(chunk)
        if seen > limit:
            raise QuotaExceeded(f"the adapter is over {limit} bytes (LORA_MAX_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


def _from_s3(url: str, storage: Storage) -> bytes:
    try:
        return read_s3_url(storage, url)
    except StorageError as exc:
        raise InvalidRequest(str(exc), "url") from None
