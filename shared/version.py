"""darkroom's version: pyproject.toml's, as the installed package reports it (one source)."""

from __future__ import annotations

import functools
import importlib.metadata

# A tree run without being installed (pip install -e . installs it): no version known.
UNKNOWN = "0+unknown"


@functools.cache
def darkroom_version() -> str:
    try:
        return importlib.metadata.version("darkroom")
    except importlib.metadata.PackageNotFoundError:
        return UNKNOWN
