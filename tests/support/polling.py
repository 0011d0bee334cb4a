"""Waiting in tests: darkroom.waiting's bounded poll (one implementation for the tests,
the benchmarks and the launchers)."""

from darkroom.waiting import wait_until

__all__ = ["wait_until"]
