"""Redis replies as text: the clients here do not decode responses (job records and
images share them), so a reply is bytes, or str where a caller decoded it already."""

from __future__ import annotations

from typing import Any


def reply_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def reply_hash(flat: list[Any]) -> dict[Any, Any]:
    """HGETALL's RESP2 reply (field, value, field, value, ...) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))
