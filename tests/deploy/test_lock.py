"""requirements/lock.txt pins every dependency of pyproject.toml (the base and every
extra: api, worker, embedded, test), and this environment was installed from it: the
test toolchain changes only when someone re-locks (scripts/lock.sh), never because a
new release appeared on PyPI.

Offline, from the lock's own `# via` annotations. The exact check, a fresh
resolution compared with the lock, is `bash scripts/lock.sh --check` (.ci/run), which
needs the package index."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# Installed from requirements/torch.txt instead: the CPU build here, CUDA builds on GPU hosts.
UNLOCKED = {"torch"}


def locked_versions() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        assert version, f"lock.txt: {line!r} is not an exact pin"
        pins[canonicalize_name(name)] = version.split(";")[0].strip()
    return pins


def declared_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        declared += [Requirement(r) for r in extra]
    return [r for r in declared if r.marker is None or r.marker.evaluate()]


def lock_sources() -> dict[str, set[str]]:
    """Each pinned package -> what pip-compile said required it (its `# via` lines)."""
    sources: dict[str, set[str]] = {}
    current = None
    for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines():
        if line.startswith("#"):
            current = None  # the header, or the footer naming the unsafe packages
        elif line and not line.startswith(" "):
            current = canonicalize_name(line.split("==", 1)[0])
            sources[current] = set()
        elif current and line.strip().startswith("#") and line.strip() != "# via":
            text = line.strip().lstrip("#").strip()
            text = text.removeprefix("via ").strip()
            if text and not text.startswith("-"):
                sources[current].add(text)
    return sources


PROJECT_SOURCE = "darkroom (pyproject.toml)"


def test_lock_has_no_stale_direct_dependency() -> None:
    """A dependency dropped from pyproject.toml leaves the lock too (re-lock)."""
    declared = {canonicalize_name(r.name) for r in declared_requirements()}
    stale = sorted(
        name
        for name, sources in lock_sources().items()
        if PROJECT_SOURCE in sources and name not in declared
    )
    assert not stale, f"run bash scripts/lock.sh: no longer in pyproject.toml: {stale}"


def test_every_locked_package_is_needed() -> None:
    """Everything in the lock is required by pyproject.toml, directly or through
    other locked packages: no leftovers of a removed dependency."""
    sources = lock_sources()
    needed = {name for name, via in sources.items() if PROJECT_SOURCE in via}
    while True:
        more = {
            name
            for name, via in sources.items()
            if name not in needed and {canonicalize_name(v) for v in via} & needed
        }
        if not more:
            break
        needed |= more
    assert set(sources) == needed, f"run bash scripts/lock.sh: {set(sources) - needed}"


def test_lock_leaves_torch_to_requirements_torch_txt() -> None:
    assert not UNLOCKED & set(locked_versions())


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    pins = locked_versions()
    problems = []
    for requirement in declared_requirements():
        name = canonicalize_name(requirement.name)
        if name in UNLOCKED:
            continue
        if name not in pins:
            problems.append(f"{requirement} is not in the lock")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{requirement}: the lock has {pins[name]}")
    assert not problems, "run bash scripts/lock.sh: " + "; ".join(problems)


def test_this_environment_was_installed_from_the_lock() -> None:
    drift = []
    for name, version in sorted(locked_versions().items()):
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            drift.append(f"{name} missing (lock: {version})")
            continue
        if installed != version:
            drift.append(f"{name} {installed} (lock: {version})")
    assert not drift, "installed versions differ from requirements/lock.txt: " + ", ".join(drift)


def test_torch_is_pinned_for_the_scripts() -> None:
    lines = (ROOT / "requirements" / "torch.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    assert [str(p) for p in pins] == ["torch==2.13.0"]
