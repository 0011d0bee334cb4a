"""Redis replies as text: the clients here do not decode responses (job records and
images share them), so a reply is bytes, or str where a caller decoded it already."""

from __future__ import annotations

from typing import Any


def reply_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
