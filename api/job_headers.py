"""The job headers' syntax: `Prefer: wait[=N]` and `Cancel-After` durations."""

from __future__ import annotations

import re

from shared.errors import InvalidRequest

MAX_WAIT_S = 60.0
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_prefer_wait(prefer: str | None) -> float | None:
    """`Prefer: wait` (60 s) or `Prefer: wait=N` (capped at 60 s); None when absent."""
    if not prefer:
        return None
    for preference in prefer.split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() != "wait":
            continue
        if not value:
            return MAX_WAIT_S
        try:
            seconds = float(value.strip().strip('"'))
        except ValueError:
            raise InvalidRequest(f"Prefer: wait={value} is not a number of seconds") from None
        return max(0.0, min(seconds, MAX_WAIT_S))
    return None


def parse_duration(text: str) -> float:
    """`Cancel-After` values: seconds ("90", "90s") or "1h30m", "5m", "1m30s"."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise InvalidRequest(f"Cancel-After {text!r} is not a duration like 90s, 5m or 1h30m")
    hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise InvalidRequest("Cancel-After must be a positive duration")
    return total
