"""Waiting in tests: poll a condition until it holds, bounded, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    timeout_s: float = 60,
    interval_s: float = 0.05,
    what: str = "condition",
) -> T:
    """The condition's first truthy value; AssertionError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in time")
        time.sleep(interval_s)
