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
    what: str | Callable[[], str] = "condition",
    ignoring: tuple[type[BaseException], ...] = (),
) -> T:
    """The condition's first truthy value; AssertionError after `timeout_s`.

    `what` says what was awaited (a callable: computed when the wait fails, to show
    the state it ended in). An exception of `ignoring` raised by the condition
    counts as "not yet" (a server still starting refuses connections); the last
    one is chained to the timeout's error. Any other exception ends the wait: a
    condition that sees a process exit early raises at once.
    """
    deadline = time.monotonic() + timeout_s
    last: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except ignoring as exc:
            last = exc
        if time.monotonic() > deadline:
            described = what() if callable(what) else what
            raise AssertionError(f"{described}: not met in {timeout_s:g} s") from last
        time.sleep(interval_s)
