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
