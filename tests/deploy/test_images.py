"""The two images, checked offline (no Docker here): deploy/api.Dockerfile installs
darkroom[api] and nothing of the worker's (no torch, diffusers or transformers),
deploy/worker.Dockerfile the CUDA build of torch with darkroom[worker], both from
requirements/lock.txt; and the code each image runs imports only what its extra
brings (a slim image that imported torch would fail at start, not at build)."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.manifests import API_IMAGE, DOCKERFILES, ROOT, WORKER_IMAGE

# Imports each image's code in a fresh interpreter.
pytestmark = pytest.mark.slow

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
# The worker's heavy dependencies: what the slim image exists to leave out.
WORKER_ONLY = {"torch", "diffusers", "transformers", "accelerate", "bitsandbytes", "safetensors"}
LOCK = "requirements/lock.txt"
TORCH = "requirements/torch.txt"


# --- pyproject.toml's extras ----------------------------------------------------


def requirement_names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_the_worker_stack_is_only_in_the_worker_extra() -> None:
    extras = PROJECT["optional-dependencies"]
    assert requirement_names(extras["worker"]) >= WORKER_ONLY
    assert not WORKER_ONLY & requirement_names(PROJECT["dependencies"])
    assert not WORKER_ONLY & requirement_names(extras["api"])
    assert {"fastapi", "uvicorn"} <= requirement_names(extras["api"])
    assert not {"fastapi", "uvicorn"} & requirement_names(extras["worker"])


def project_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """darkroom's own requirements with these extras (from pyproject.toml, not from
    the installed metadata, which is as old as the last install)."""
    requirements = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        requirements += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


@cache
def installed_closure(extras: tuple[str, ...]) -> frozenset[str]:
    """Every distribution `pip install darkroom[extras]` brings, after this
    environment's metadata (markers evaluated, extras of dependencies followed)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = project_requirements(extras)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dependencies = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        environments = [{"extra": ""}] + [{"extra": e} for e in requirement.extras]
        for line in dependencies:
            dependency = Requirement(line)
            if dependency.marker is None or any(
                dependency.marker.evaluate(env) for env in environments
            ):
                todo.append(dependency)
    return frozenset({"darkroom"} | {name for name, _ in seen})


def test_darkroom_api_brings_no_worker_dependency() -> None:
    """Transitively too: none of fastapi's, uvicorn's, celery's ... needs torch."""
    api = installed_closure(("api",))
    assert {"fastapi", "uvicorn", "celery", "redis", "boto3"} <= api
    assert not WORKER_ONLY & api
    assert not {name for name in api if name.startswith(("nvidia-", "triton"))}
    assert installed_closure(("worker",)) >= WORKER_ONLY


# --- the Dockerfiles -----------------------------------------------------------


def instructions(image: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = (ROOT / DOCKERFILES[image]).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            result.append((keyword.upper(), " ".join(arguments.split())))
    return result


def pip_installs(image: str) -> list[list[str]]:
    return [
        shlex.split(arguments)
        for keyword, arguments in instructions(image)
        if keyword == "RUN" and "pip install" in arguments
    ]


def installed_specs(image: str) -> list[str]:
    """What the image's `pip install` lines name: `.[api]`, `-r requirements/torch.txt`."""
    specs = []
    for argv in pip_installs(image):
        for i, arg in enumerate(argv):
            if arg.startswith(".") or (i and argv[i - 1] == "-r"):
                specs.append(arg)
    return specs


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_installs_from_the_lock(image: str) -> None:
    installs = pip_installs(image)
    assert installs
    for argv in installs:
        assert argv[argv.index("-c") + 1] == LOCK, argv
    # python:3.11: the Python the lock was resolved with (its header says which).
    base = [arguments for keyword, arguments in instructions(image) if keyword == "FROM"]
    assert base == ["python:3.11-slim"]
    assert "with Python 3.11" in (ROOT / LOCK).read_text(encoding="utf-8")


def test_api_image_installs_the_api_extra_only() -> None:
    assert installed_specs(API_IMAGE) == [".[api]"]
    text = " ".join(arguments for _, arguments in instructions(API_IMAGE))
    assert "torch" not in text
    assert "worker]" not in text
    assert "cuda" not in text.lower()


def test_worker_image_installs_torch_and_the_worker_extra() -> None:
    specs = installed_specs(WORKER_IMAGE)
    assert specs[0] == TORCH, "torch first, in a layer of its own"
    assert ".[worker]" in specs
    assert not [s for s in specs if s.startswith(".") and "api" in s]


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_dockerfile_copies_what_it_installs(image: str) -> None:
    """Every COPY source exists, and every package pyproject.toml ships is copied
    (the console script imports darkroom/, the webhook worker worker/)."""
    copied = set()
    for keyword, arguments in instructions(image):
        if keyword == "COPY":
            *sources, _ = arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{DOCKERFILES[image]}: COPY {source}"
                copied.add(source.rstrip("/"))
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    packages = {pattern.rstrip("*") for pattern in find["include"]}
    assert packages <= copied
    assert {"pyproject.toml", "README.md", "model_config.yaml"} <= copied


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_image_runs_as_the_manifests_user(image: str) -> None:
    """uid 10001, as runAsUser in deploy/k8s; never root."""
    steps = instructions(image)
    users = [arguments for keyword, arguments in steps if keyword == "USER"]
    assert users
    assert users[-1] not in {"root", "0"}
    assert any("--uid 10001" in arguments for keyword, arguments in steps if keyword == "RUN")


def test_image_commands() -> None:
    def command(image: str) -> str:
        return [arguments for keyword, arguments in instructions(image) if keyword == "CMD"][-1]

    assert command(API_IMAGE).startswith('["darkroom", "api"')
    assert command(WORKER_IMAGE).startswith('["darkroom", "worker"')


# --- what each image's code imports ----------------------------------------------


def modules_outside(extras: tuple[str, ...]) -> set[str]:
    """Top-level modules of this environment that darkroom[extras] would not install."""
    closure = installed_closure(extras)
    return {
        module
        for module, distributions in metadata.packages_distributions().items()
        if not {canonicalize_name(d) for d in distributions} & closure and module.isidentifier()
    }


def import_with_only(extras: tuple[str, ...], code: str) -> None:
    """Run `code` in a fresh interpreter where every module darkroom[extras] would
    not bring fails to import, as it would in that image."""
    blocked = sorted(modules_outside(extras))
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys
        BLOCKED = set({blocked!r})

        class NotInTheImage(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"{{name}} is not in darkroom{list(extras)}")
                return None

        sys.meta_path.insert(0, NotInTheImage())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_api_image_code_imports_nothing_of_the_worker() -> None:
    """The API, the webhook worker and the CLI's light commands, with darkroom[api] only."""
    # Installed here (the tests install both extras), so the check has teeth.
    assert {"torch", "diffusers", "transformers"} <= modules_outside(("api",))
    import_with_only(
        ("api",),
        """
        from api.main import create_app
        create_app()
        import worker.webhook_app, worker.webhook_delivery
        from darkroom import cli, client, process_commands, submit
        cli.main(["models", "--json"])
        """,
    )


def test_the_worker_image_code_imports_nothing_of_the_api() -> None:
    """The GPU worker's modules, with darkroom[worker] only (no fastapi, uvicorn)."""
    pytest.importorskip("torch")
    import_with_only(
        ("worker",),
        """
        import worker.celery_app, worker.runner, worker.loader, worker.inference
        from darkroom import cli, process_commands, pool
        """,
    )


def module_imports(path: Path) -> set[str]:
    """Top-level names of every import in a file, those inside functions too."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.partition(".")[0])
    return names


def test_api_and_shared_never_import_the_worker_stack() -> None:
    """Lazy imports too (inside functions), which an import at start would not see."""
    blocked = modules_outside(("api",)) | {"worker"}
    problems = [
        f"{path.relative_to(ROOT)} imports {name}"
        for package in ("api", "shared")
        for path in sorted((ROOT / package).rglob("*.py"))
        for name in sorted(module_imports(path) & blocked)
    ]
    assert not problems, problems
