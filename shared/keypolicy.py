"""What each API key may do: its name, priorities, share weight and limits.

A line of API_KEYS_FILE is a key's SHA-256 digest, then optional settings:

    <digest> name=alice priorities=high,normal,low weight=2 max_running=4 max_queued=50 admin=true

Keys from API_KEYS, and file lines without settings, get the defaults: the
`normal` and `low` priorities (a key that may use `high` can starve every
other key, so it is granted, never assumed), weight 1, the server-wide limits
and no admin rights. With no keys configured the API has one trusted user,
who may use everything.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import get_args

from shared.jobs import Priority

# Highest first: how priorities are listed to callers.
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
DEFAULT_PRIORITIES: tuple[Priority, ...] = ("normal", "low")
# A name shows up in logs and in GET /me: printable, no spaces, not too long.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


@dataclass(frozen=True)
class KeyPolicy:
    name: str | None = None
    priorities: tuple[Priority, ...] = DEFAULT_PRIORITIES
    # The key's share of the workers against other keys within a priority band.
    weight: float = 1.0
    # At most this many of the key's jobs run at once (None: no cap of its own).
    max_running: int | None = None
    # Overrides RATE_LIMIT_MAX_QUEUED for this key (None: the server-wide limit).
    max_queued: int | None = None
    # Sees other tenants' operational details (worker pids and hosts in /status).
    admin: bool = False

    def default_priority(self) -> Priority:
        """The priority of a job that asks for none: `normal` where allowed, else the
        highest the key may use below it, else its only one."""
        for priority in ("normal", "low", "high"):
            if priority in self.priorities:
                return priority
        return "normal"


DEFAULT_POLICY = KeyPolicy()
# No API keys configured: a single trusted user.
OPEN_POLICY = KeyPolicy(priorities=PRIORITIES, admin=True)


def parse_policy(fields: list[str]) -> KeyPolicy:
    """The settings after a digest on an API_KEYS_FILE line; ValueError naming a bad one."""
    policy = DEFAULT_POLICY
    seen: set[str] = set()
    for field in fields:
        name, sep, value = field.partition("=")
        if not sep or not value:
            raise ValueError(f"expected name=value, not {field!r}")
        if name in seen:
            raise ValueError(f"{name} given twice")
        seen.add(name)
        policy = _with_setting(policy, name, value)
    return policy


def _with_setting(policy: KeyPolicy, name: str, value: str) -> KeyPolicy:
    if name == "name":
        if not _NAME.match(value):
            raise ValueError(f"name {value!r}: letters, digits and ._@+- only, at most 64")
        return replace(policy, name=value)
    if name == "priorities":
        return replace(policy, priorities=_priorities(value))
    if name == "weight":
        return replace(policy, weight=_positive_number(name, value))
    if name == "max_running":
        return replace(policy, max_running=_count(name, value))
    if name == "max_queued":
        return replace(policy, max_queued=_count(name, value))
    if name == "admin":
        if value not in ("true", "false"):
            raise ValueError(f"admin must be true or false, not {value!r}")
        return replace(policy, admin=value == "true")
    raise ValueError(
        f"unknown setting {name!r} (known: name, priorities, weight, max_running, "
        "max_queued, admin)"
    )


def _priorities(value: str) -> tuple[Priority, ...]:
    asked = {part.strip() for part in value.split(",") if part.strip()}
    unknown = asked - set(PRIORITIES)
    if unknown or not asked:
        raise ValueError(f"priorities {value!r}: a comma-separated list of {', '.join(PRIORITIES)}")
    return tuple(p for p in PRIORITIES if p in asked)


def _positive_number(name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{name} must be a positive number, not {value!r}")
    return number


def _count(name: str, value: str) -> int:
    if not value.isdigit():
        raise ValueError(f"{name} must be a whole number (0 or more), not {value!r}")
    return int(value)
