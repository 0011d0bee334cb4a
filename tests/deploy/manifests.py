"""Load the deployment files (deploy/k8s, docker-compose.yml) for the tests beside this one."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
MODEL_CONFIG = ROOT / "model_config.yaml"
KUSTOMIZATION = "kustomization.yaml"

# The two images (docs/deploy.md, "Images") and the Dockerfiles that build them:
# the slim one (darkroom[api], no torch) for the API and the webhook worker, the
# CUDA one (darkroom[worker]) for the GPU workers.
API_IMAGE = "darkroom-api"
WORKER_IMAGE = "darkroom-worker"
DOCKERFILES = {
    API_IMAGE: "deploy/api.Dockerfile",
    WORKER_IMAGE: "deploy/worker.Dockerfile",
}
# darkroom's commands (`darkroom <command>`) and the image each one runs in.
IMAGE_FOR_COMMAND = {"api": API_IMAGE, "webhooks": API_IMAGE, "worker": WORKER_IMAGE}


def image_name(image: str) -> str:
    """`darkroom-api:latest` -> `darkroom-api` (a registry prefix stays)."""
    name, _, tag = image.rpartition(":")
    return name if name and "/" not in tag else image


# Environment variables darkroom's containers may be given that are not
# darkroom settings: the AWS SDK's, Hugging Face's, the KEDA triggers' own.
EXTERNAL_ENV = {
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "HF_TOKEN",
    "HF_HOME",
    "REDIS_ADDRESS",
    "POD_NAME",
}


def setting_env_names() -> set[str]:
    """Every environment variable darkroom's Settings reads (case-insensitively)."""
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(name.upper())
        choices = getattr(field.validation_alias, "choices", None) or []
        names.update(str(choice).upper() for choice in choices)
    return names


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the file it came from."""

    path: Path
    index: int
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind"))

    @property
    def name(self) -> str:
        return str(self.obj.get("metadata", {}).get("name"))

    @property
    def label(self) -> str:
        return f"{self.path.relative_to(K8S)}#{self.index} {self.kind}/{self.name}"


def load_yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def kustomizations() -> list[Path]:
    return sorted(K8S.rglob(KUSTOMIZATION))


def kustomization_files(kustomization: Path) -> tuple[list[Path], list[Path]]:
    """(resource files, patch files) a kustomization names, as paths."""
    spec = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
    base = kustomization.parent
    resources = [base / entry for entry in spec.get("resources", [])]
    patches = [base / entry["path"] for entry in spec.get("patches", []) if "path" in entry]
    return resources, patches


def patch_files() -> set[Path]:
    return {patch for k in kustomizations() for patch in kustomization_files(k)[1]}


def manifest_files() -> list[Path]:
    """Every YAML file under deploy/k8s that holds whole objects (not kustomize's own files)."""
    patches = patch_files()
    return sorted(
        path for path in K8S.rglob("*.yaml") if path.name != KUSTOMIZATION and path not in patches
    )


def load_manifests(files: list[Path] | None = None) -> list[Manifest]:
    found = []
    for path in files if files is not None else manifest_files():
        for index, obj in enumerate(load_yaml_documents(path)):
            found.append(Manifest(path, index, obj))
    return found


def base_manifests() -> list[Manifest]:
    """What `kubectl apply -k deploy/k8s` applies (deploy/k8s/optional excluded)."""
    resources, _ = kustomization_files(K8S / KUSTOMIZATION)
    return load_manifests(resources)


def by_kind(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m.kind == kind]


def find(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [m for m in manifests if m.kind == kind and m.name == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    return workload.obj["spec"]["template"]["spec"]


def containers(workload: Manifest) -> list[dict[str, Any]]:
    return list(pod_spec(workload)["containers"])


def gpu_workers(manifests: list[Manifest]) -> list[Manifest]:
    return [
        m
        for m in by_kind(manifests, "Deployment")
        if m.obj["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "gpu-worker"
    ]


def option_value(command: list[str], option: str) -> str | None:
    """The value after `option` in an argv list (`--model sdxl`), or None."""
    for i, arg in enumerate(command[:-1]):
        if arg == option:
            return command[i + 1]
    return None


def exec_probe_code(probe: Mapping[str, Any]) -> str:
    """The Python source of a `python -c CODE` exec probe."""
    command = probe["exec"]["command"]
    assert command[:2] == ["python", "-c"], command
    return str(command[2])


# --- docker compose ---------------------------------------------------------

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation: $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR:+a}, $$."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        current = env.get(name)
        op, arg = match["op"], match["arg"] or ""
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if unset else str(current)
        if op in (":?", "?"):
            if unset:
                raise ValueError(f"required variable {name} is missing: {arg}")
            return str(current)
        if op in (":+", "+"):
            return "" if unset else arg
        return current or ""

    return _VARIABLE.sub(replace, value)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    return node


def compose_variables(text: str) -> set[str]:
    """Names of the variables a compose file interpolates."""
    return {m["braced"] or m["bare"] for m in _VARIABLE.finditer(text) if not m["escaped"]}


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return raw if env is None else interpolate_tree(raw, env)


def parse_duration_s(value: str | int | float) -> float:
    """Compose durations: 1h30m, 15m, 90s, 500ms, or plain seconds."""
    if isinstance(value, int | float):
        return float(value)
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|us|m|s)", value)
    assert parts, f"bad duration {value!r}"
    assert "".join(n + u for n, u in parts) == value, f"bad duration {value!r}"
    return sum(float(n) * units[u] for n, u in parts)


def iter_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from iter_strings(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from iter_strings(value)
