"""requirements/lock.txt pins every dependency of pyproject.toml, and this environment
was installed from it: the test toolchain changes only when someone re-locks
(scripts/lock.sh), never because a new release appeared on PyPI."""

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
    pins = {}
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
