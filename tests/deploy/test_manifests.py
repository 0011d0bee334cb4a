"""The Kubernetes manifests in deploy/k8s, checked offline: no cluster, no Docker.

Structure (every object well formed, selectors that select, probes, resources),
what darkroom's code expects (queue and list names, the worker record's name,
settings names, the registry), the Kubernetes JSON schemas (kubernetes-validate)
and, where kubectl is installed, `kubectl kustomize` builds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from shared.cluster_stats import ANY_MODEL
from shared.constants import DEFAULT_QUEUE, broker_lists, model_queue
from shared.settings import Settings
from tests.deploy.manifests import (
    EXTERNAL_ENV,
    IMAGE_FOR_COMMAND,
    K8S,
    KUSTOMIZATION,
    MODEL_CONFIG,
    Manifest,
    base_manifests,
    by_kind,
    containers,
    exec_probe_code,
    find,
    gpu_workers,
    image_name,
    kustomization_files,
    kustomizations,
    load_manifests,
    load_yaml_documents,
    manifest_files,
    option_value,
    pod_spec,
    setting_env_names,
)
from tests.deploy.promql import selectors

ALL = load_manifests()
BASE = base_manifests()
WORKLOADS = [m for m in ALL if m.kind in {"Deployment", "StatefulSet"}]
GPU_WORKERS = gpu_workers(BASE)
SCALED_OBJECTS = by_kind(BASE, "ScaledObject")
REGISTRY = yaml.safe_load(MODEL_CONFIG.read_text(encoding="utf-8"))

# Custom resources (CRDs): no Kubernetes schema for them; checked field by field below.
CUSTOM_API_GROUPS = ("keda.sh/", "monitoring.coreos.com/")


def ids(manifests: list[Manifest]) -> list[str]:
    return [m.label for m in manifests]


def labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def selects(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return bool(selector) and all(pod_labels.get(k) == v for k, v in selector.items())


def config_data() -> dict[str, str]:
    return dict(find(BASE, "ConfigMap", "darkroom-config").obj["data"])


# --- every object -------------------------------------------------------------


def test_there_is_something_to_check() -> None:
    assert {"Deployment", "Service", "ConfigMap", "Secret", "ScaledObject"} <= {
        m.kind for m in BASE
    }
    assert GPU_WORKERS
    assert SCALED_OBJECTS


@pytest.mark.parametrize("manifest", ALL, ids=ids(ALL))
def test_object_is_well_formed(manifest: Manifest) -> None:
    obj = manifest.obj
    assert isinstance(obj, dict)
    assert isinstance(obj.get("apiVersion"), str)
    assert obj["apiVersion"]
    assert isinstance(obj.get("kind"), str)
    assert obj["kind"]
    name = obj.get("metadata", {}).get("name")
    assert isinstance(name, str)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert len(name) <= 63, name
    # Namespace-agnostic: the namespace is chosen at apply time.
    assert "namespace" not in obj["metadata"]
    assert labels(obj).get("app.kubernetes.io/part-of") == "darkroom"


def test_names_are_unique_per_kind() -> None:
    keys = [(m.kind, m.name) for m in ALL]
    assert len(keys) == len(set(keys)), keys


@pytest.mark.parametrize(
    "manifest",
    [m for m in ALL if not m.obj["apiVersion"].startswith(CUSTOM_API_GROUPS)],
    ids=ids([m for m in ALL if not m.obj["apiVersion"].startswith(CUSTOM_API_GROUPS)]),
)
@pytest.mark.parametrize("version", ["1.29.0", "latest"])
def test_kubernetes_schema(manifest: Manifest, version: str) -> None:
    """Strict JSON-schema validation (unknown fields are errors), offline."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    if version == "latest":
        version = kubernetes_validate.latest_version()
    try:
        kubernetes_validate.validate(manifest.obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = "/".join(str(p) for p in exc.path)
        pytest.fail(f"{manifest.label}: {exc.message} at {path}")


# --- kustomize ----------------------------------------------------------------


@pytest.mark.parametrize("kustomization", kustomizations(), ids=lambda p: str(p.relative_to(K8S)))
def test_kustomization_names_existing_files_and_no_namespace(kustomization: Path) -> None:
    spec = yaml.safe_load(kustomization.read_text(encoding="utf-8"))
    assert "namespace" not in spec, "namespace-agnostic: set it in an overlay or with -n"
    resources, patches = kustomization_files(kustomization)
    for path in [*resources, *patches]:
        assert path.is_file(), f"{kustomization} names {path}, which is missing"


def test_every_manifest_belongs_to_a_kustomization() -> None:
    listed = {p.resolve() for k in kustomizations() for p in kustomization_files(k)[0]}
    missing = [str(p.relative_to(K8S)) for p in manifest_files() if p.resolve() not in listed]
    assert not missing, f"not in any kustomization.yaml: {missing}"


def test_base_kustomization_lists_every_top_level_file() -> None:
    resources, _ = kustomization_files(K8S / KUSTOMIZATION)
    on_disk = {p for p in K8S.glob("*.yaml") if p.name != KUSTOMIZATION}
    assert set(resources) == on_disk


def kubectl() -> str:
    path = shutil.which("kubectl")
    if path is None:
        pytest.skip("kubectl not installed")
    return path


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECONFIG": os.devnull},
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_kubectl_kustomize_builds_the_base() -> None:
    built = {(d["kind"], d["metadata"]["name"]) for d in kustomize_build(K8S)}
    assert built == {(m.kind, m.name) for m in BASE}


def test_kubectl_kustomize_builds_optional_redis() -> None:
    built = kustomize_build(K8S / "optional" / "redis")
    assert {d["kind"] for d in built} == {"Service", "StatefulSet"}


def test_kubectl_kustomize_builds_optional_monitoring() -> None:
    built = kustomize_build(K8S / "optional" / "monitoring")
    assert sorted(d["kind"] for d in built) == ["PodMonitor"] * 3 + ["PrometheusRule"]


def build_with_component(tmp_path: Path, component: str) -> list[dict[str, Any]]:
    """`kubectl kustomize` of an overlay: the base plus optional/<component>."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    # kustomize wants relative paths.
    base = os.path.relpath(K8S, overlay)
    path = os.path.relpath(K8S / "optional" / component, overlay)
    (overlay / KUSTOMIZATION).write_text(
        yaml.safe_dump({"resources": [base], "components": [path]})
    )
    return kustomize_build(overlay)


def test_keda_prometheus_component_swaps_only_the_triggers(tmp_path: Path) -> None:
    """The patched ScaledObjects scale on one prometheus trigger (no formula left over
    from the Redis triggers); every other object is the base's."""
    built = build_with_component(tmp_path, "keda-prometheus")
    patched = {target["name"] for _, target in keda_prometheus_patches()}
    base = {(m.kind, m.name): m.obj for m in BASE}
    assert {(d["kind"], d["metadata"]["name"]) for d in built} == set(base)
    for doc in built:
        original = base[(doc["kind"], doc["metadata"]["name"])]
        if doc["kind"] != "ScaledObject" or doc["metadata"]["name"] not in patched:
            assert doc == original
            continue
        spec = doc["spec"]
        assert [t["type"] for t in spec["triggers"]] == ["prometheus"]
        assert "scalingModifiers" not in spec["advanced"]
        assert spec["scaleTargetRef"] == original["spec"]["scaleTargetRef"]
        assert spec["minReplicaCount"] == 0
        assert spec["fallback"]["replicas"] >= 1


def test_models_pvc_component_swaps_every_gpu_worker_cache(tmp_path: Path) -> None:
    """An overlay with optional/models-pvc: the PVC is added, no worker keeps an emptyDir."""
    built = build_with_component(tmp_path, "models-pvc")
    claims = [d for d in built if d["kind"] == "PersistentVolumeClaim"]
    assert [c["metadata"]["name"] for c in claims] == ["darkroom-models"]
    assert claims[0]["spec"]["accessModes"] == ["ReadWriteMany"]
    workers = [
        d
        for d in built
        if d["kind"] == "Deployment"
        and d["metadata"]["labels"].get("app.kubernetes.io/component") == "gpu-worker"
    ]
    assert len(workers) == len(GPU_WORKERS)
    for worker in workers:
        volumes = {v["name"]: v for v in worker["spec"]["template"]["spec"]["volumes"]}
        assert volumes["models"] == {
            "name": "models",
            "persistentVolumeClaim": {"claimName": "darkroom-models"},
        }
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    for doc in built:
        if not doc["apiVersion"].startswith(CUSTOM_API_GROUPS):
            kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


# --- workloads ----------------------------------------------------------------


@pytest.mark.parametrize("workload", WORKLOADS, ids=ids(WORKLOADS))
def test_selector_matches_template_labels(workload: Manifest) -> None:
    selector = workload.obj["spec"]["selector"]["matchLabels"]
    template_labels = workload.obj["spec"]["template"]["metadata"]["labels"]
    assert selects(selector, template_labels)
    # No other workload's pods may match this selector.
    for other in WORKLOADS:
        if other is not workload:
            assert not selects(selector, other.obj["spec"]["template"]["metadata"]["labels"])


@pytest.mark.parametrize("workload", WORKLOADS, ids=ids(WORKLOADS))
def test_containers_have_image_probes_and_resources(workload: Manifest) -> None:
    for container in containers(workload):
        assert container.get("image"), container["name"]
        assert "readinessProbe" in container, f"{container['name']}: no readiness probe"
        resources = container.get("resources", {})
        assert resources.get("requests", {}).get("cpu"), f"{container['name']}: no cpu request"
        assert resources.get("requests", {}).get("memory")
        assert resources.get("limits", {}).get("memory"), f"{container['name']}: no memory limit"
    security = pod_spec(workload).get("securityContext", {})
    assert security.get("runAsNonRoot") is True


def darkroom_workloads() -> list[Manifest]:
    return [
        m
        for m in by_kind(BASE, "Deployment")
        if any(image_name(c["image"]) in set(IMAGE_FOR_COMMAND.values()) for c in containers(m))
    ]


def test_each_darkroom_container_runs_its_image() -> None:
    """API and webhook worker: the slim image (no torch); GPU workers: the CUDA one."""
    commands = set()
    for workload in by_kind(ALL, "Deployment") + by_kind(ALL, "StatefulSet"):
        for container in containers(workload):
            command = container.get("command") or []
            if command[:1] != ["darkroom"]:
                assert not image_name(container["image"]).startswith("darkroom"), workload.label
                continue
            commands.add(command[1])
            expected = IMAGE_FOR_COMMAND[command[1]]
            assert image_name(container["image"]) == expected, workload.label
    assert commands == set(IMAGE_FOR_COMMAND)
    for worker in GPU_WORKERS:
        assert [image_name(c["image"]) for c in containers(worker)] == [IMAGE_FOR_COMMAND["worker"]]


def test_kustomization_names_both_images() -> None:
    """`images:` in the base lets an overlay point each image at a registry."""
    spec = yaml.safe_load((K8S / KUSTOMIZATION).read_text(encoding="utf-8"))
    assert {entry["name"] for entry in spec["images"]} == set(IMAGE_FOR_COMMAND.values())


@pytest.mark.parametrize("workload", darkroom_workloads(), ids=ids(darkroom_workloads()))
def test_darkroom_containers_get_settings_and_registry(workload: Manifest) -> None:
    """Settings from the ConfigMap and Secret; the registry mounted where MODEL_CONFIG says."""
    model_config = Path(config_data()["MODEL_CONFIG"])
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    for container in containers(workload):
        sources = container.get("envFrom", [])
        assert {"configMapRef": {"name": "darkroom-config"}} in sources
        assert {"secretRef": {"name": "darkroom-secrets"}} in sources
        mounts = [
            m
            for m in container.get("volumeMounts", [])
            if volumes[m["name"]].get("configMap", {}).get("name") == "darkroom-models"
        ]
        assert [Path(m["mountPath"]) for m in mounts] == [model_config.parent]
        assert container["command"][0] == "darkroom"


def test_references_resolve() -> None:
    """Every ConfigMap, Secret and claim a workload names is in the same kustomization."""
    present = {(m.kind, m.name) for m in BASE}
    for workload in by_kind(BASE, "Deployment"):
        for container in containers(workload):
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in present
                if "secretRef" in source:
                    assert ("Secret", source["secretRef"]["name"]) in present
        for volume in pod_spec(workload).get("volumes", []):
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in present


def test_api_deployment() -> None:
    api = find(BASE, "Deployment", "darkroom-api")
    assert api.obj["spec"]["replicas"] >= 2
    (container,) = containers(api)
    assert container["command"][:2] == ["darkroom", "api"]
    assert option_value(container["command"], "--host") == "0.0.0.0"
    port = int(option_value(container["command"], "--port") or 0)
    assert {"name": "http", "containerPort": port} in container["ports"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    # Prefer: wait holds requests up to 60 s.
    assert pod_spec(api)["terminationGracePeriodSeconds"] > 60


def test_services_select_pods_and_named_ports() -> None:
    for service in by_kind(ALL, "Service"):
        selector = service.obj["spec"]["selector"]
        targets = [
            w
            for w in WORKLOADS
            if selects(selector, w.obj["spec"]["template"]["metadata"]["labels"])
        ]
        assert len(targets) == 1, f"{service.label} selects {len(targets)} workloads"
        port_names = {p.get("name") for c in containers(targets[0]) for p in c.get("ports", [])}
        for port in service.obj["spec"]["ports"]:
            assert port["targetPort"] in port_names


def test_disruption_budgets_select_pods() -> None:
    for budget in by_kind(ALL, "PodDisruptionBudget"):
        selector = budget.obj["spec"]["selector"]["matchLabels"]
        assert any(
            selects(selector, w.obj["spec"]["template"]["metadata"]["labels"]) for w in WORKLOADS
        )


def test_webhook_worker() -> None:
    hooks = find(BASE, "Deployment", "darkroom-webhooks")
    (container,) = containers(hooks)
    assert container["command"] == ["darkroom", "webhooks"]
    code = exec_probe_code(container["readinessProbe"])
    assert "webhooks-0@" in code
    assert "ping" in code
    assert "nvidia.com/gpu" not in str(container["resources"])


# --- GPU workers --------------------------------------------------------------


def pinned_model(worker: Manifest) -> str:
    (container,) = containers(worker)
    model = option_value(container["command"], "--model")
    assert model, f"{worker.label}: a GPU worker Deployment serves one model (--model)"
    return model


@pytest.mark.parametrize("worker", GPU_WORKERS, ids=ids(GPU_WORKERS))
def test_gpu_worker_deployment(worker: Manifest) -> None:
    model = pinned_model(worker)
    assert model in REGISTRY["models"], f"{model} is not in model_config.yaml"
    assert worker.name == f"darkroom-worker-{model}"
    assert labels(worker.obj).get("darkroom/model") == model
    assert worker.obj["spec"]["template"]["metadata"]["labels"].get("darkroom/model") == model
    (container,) = containers(worker)
    assert container["command"][:2] == ["darkroom", "worker"]
    # One GPU per pod (extended resources: limits; requests follow them).
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    # KEDA owns the replica count; a fixed one would fight it on every apply.
    assert "replicas" not in worker.obj["spec"]
    # Warm shutdown: the running job may take up to the hard time limit.
    grace = pod_spec(worker)["terminationGracePeriodSeconds"]
    assert grace >= 300
    assert grace >= Settings.model_fields["job_time_limit_s"].default
    # The model cache lives on a volume at HF_CACHE_DIR.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts.get(config_data()["HF_CACHE_DIR"]) == "models"


@pytest.mark.parametrize("worker", GPU_WORKERS, ids=ids(GPU_WORKERS))
def test_gpu_worker_is_named_after_its_pod(worker: Manifest) -> None:
    """`--name gpu@$(POD_NAME)`: the record the readiness probe reads is this pod's."""
    (container,) = containers(worker)
    assert option_value(container["command"], "--name") == "gpu@$(POD_NAME)"
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    probe = container["readinessProbe"]
    code = exec_probe_code(probe)
    assert "os.environ['POD_NAME']" in code
    assert "'darkroom:worker:gpu@'" in code
    assert probe["timeoutSeconds"] >= 3
    assert "livenessProbe" not in container  # it would restart workers on a Redis outage


# --- KEDA ---------------------------------------------------------------------

SCALED_OBJECT_KEYS = {
    "scaleTargetRef",
    "pollingInterval",
    "cooldownPeriod",
    "initialCooldownPeriod",
    "idleReplicaCount",
    "minReplicaCount",
    "maxReplicaCount",
    "fallback",
    "advanced",
    "triggers",
}
TRIGGER_KEYS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
REDIS_TRIGGER_METADATA = {
    "address",
    "addressFromEnv",
    "host",
    "hostFromEnv",
    "port",
    "portFromEnv",
    "usernameFromEnv",
    "passwordFromEnv",
    "listName",
    "listLength",
    "activationListLength",
    "databaseIndex",
    "enableTLS",
    "unsafeSsl",
}
SCALING_MODIFIER_KEYS = {"formula", "target", "activationTarget", "metricType"}


@pytest.mark.parametrize("scaled", SCALED_OBJECTS, ids=ids(SCALED_OBJECTS))
def test_scaled_object_shape(scaled: Manifest) -> None:
    """What KEDA's CRD accepts: known fields, and string metadata values (quoted numbers)."""
    assert scaled.obj["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled.obj["spec"]
    assert set(spec) <= SCALED_OBJECT_KEYS
    assert spec["minReplicaCount"] == 0, "scale to zero when idle"
    assert spec["maxReplicaCount"] >= 1
    for trigger in spec["triggers"]:
        assert set(trigger) <= TRIGGER_KEYS
        assert trigger["type"] == "redis"
        metadata = trigger["metadata"]
        assert set(metadata) <= REDIS_TRIGGER_METADATA
        assert all(isinstance(v, str) for v in metadata.values()), metadata
        assert int(metadata["listLength"]) >= 1
    modifiers = spec.get("advanced", {}).get("scalingModifiers")
    if modifiers:
        assert set(modifiers) <= SCALING_MODIFIER_KEYS
        assert isinstance(modifiers["target"], str)
        names = [t["name"] for t in spec["triggers"]]
        assert len(names) == len(set(names))
        used = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", modifiers["formula"]))
        assert used == set(names), "the formula uses every trigger, and only those"


@pytest.mark.parametrize("scaled", SCALED_OBJECTS, ids=ids(SCALED_OBJECTS))
def test_scaled_object_watches_its_models_queue(scaled: Manifest) -> None:
    target = scaled.obj["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    worker = find(GPU_WORKERS, "Deployment", target["name"])
    model = pinned_model(worker)
    lists = [t["metadata"]["listName"] for t in scaled.obj["spec"]["triggers"]]
    assert len(lists) == len(set(lists))
    own = broker_lists(model_queue(model))
    default = broker_lists(DEFAULT_QUEUE)
    # Every priority list of the model's queue: a job at any priority wakes a worker.
    assert set(own) <= set(lists), f"missing: {set(own) - set(lists)}"
    # Besides those, only the shared default queue, and then all of its lists.
    extra = set(lists) - set(own)
    assert extra in (set(), set(default)), f"unexpected lists: {extra - set(default)}"


def test_every_gpu_worker_has_one_scaled_object() -> None:
    targets = [s.obj["spec"]["scaleTargetRef"]["name"] for s in SCALED_OBJECTS]
    assert sorted(targets) == sorted(w.name for w in GPU_WORKERS)


def test_default_queue_is_watched_once_by_the_primary_models_workers() -> None:
    """Model-less jobs go to darkroom.default: with every worker scaled to zero,
    exactly one ScaledObject must wake workers for them, those of the primary model."""
    watching = [
        s
        for s in SCALED_OBJECTS
        if DEFAULT_QUEUE in {t["metadata"]["listName"] for t in s.obj["spec"]["triggers"]}
    ]
    assert len(watching) == 1
    worker = find(GPU_WORKERS, "Deployment", watching[0].obj["spec"]["scaleTargetRef"]["name"])
    assert pinned_model(worker) == REGISTRY["runtime"]["primary_model"]


def test_models_scaled_from_zero_are_marked_autoscaled() -> None:
    """A model whose workers KEDA starts from zero has no live worker while idle: the
    API must accept its jobs (AUTOSCALED_MODELS), not refuse them as unservable."""
    from_zero = set()
    for scaled in SCALED_OBJECTS:
        if scaled.obj["spec"].get("minReplicaCount", 0) == 0:
            target = scaled.obj["spec"]["scaleTargetRef"]["name"]
            from_zero.add(pinned_model(find(GPU_WORKERS, "Deployment", target)))
    marked = {m.strip() for m in config_data().get("AUTOSCALED_MODELS", "").split(",")}
    assert from_zero
    assert from_zero <= marked - {""}


@pytest.mark.parametrize("scaled", SCALED_OBJECTS, ids=ids(SCALED_OBJECTS))
def test_trigger_redis_is_the_workers_redis(scaled: Manifest) -> None:
    """addressFromEnv names a variable the target's container has; its host:port and
    databaseIndex are REDIS_URL's."""
    config = config_data()
    url = urlparse(config["REDIS_URL"])
    database = (url.path or "/0").lstrip("/") or "0"
    worker = find(GPU_WORKERS, "Deployment", scaled.obj["spec"]["scaleTargetRef"]["name"])
    (container,) = containers(worker)
    assert {"configMapRef": {"name": "darkroom-config"}} in container["envFrom"]
    for trigger in scaled.obj["spec"]["triggers"]:
        metadata = trigger["metadata"]
        assert metadata["addressFromEnv"] in config
        assert config[metadata["addressFromEnv"]] == f"{url.hostname}:{url.port or 6379}"
        assert metadata["databaseIndex"] == database


# --- configuration ------------------------------------------------------------


def test_model_config_configmap_is_the_registry_byte_for_byte() -> None:
    inlined = find(BASE, "ConfigMap", "darkroom-models").obj["data"]["model_config.yaml"]
    assert inlined.encode("utf-8") == MODEL_CONFIG.read_bytes(), (
        "deploy/k8s/model-config.yaml differs from model_config.yaml: "
        "run python scripts/sync_k8s_model_config.py"
    )
    assert Path(config_data()["MODEL_CONFIG"]).name == "model_config.yaml"


def test_configmap_and_secret_hold_known_settings() -> None:
    known = setting_env_names() | EXTERNAL_ENV
    secret = find(BASE, "Secret", "darkroom-secrets").obj
    for name in [*config_data(), *secret["stringData"]]:
        assert name in known, f"{name} is neither a darkroom setting nor a known variable"
    # Secrets never sit in the ConfigMap.
    assert not {"API_KEYS", "WEBHOOK_SECRET", "AWS_SECRET_ACCESS_KEY", "HF_TOKEN"} & set(
        config_data()
    )


def test_secret_is_a_template_of_placeholders() -> None:
    secret = find(BASE, "Secret", "darkroom-secrets").obj
    assert "data" not in secret, "stringData placeholders only; real values stay out of git"
    values = secret["stringData"]
    assert {"API_KEYS", "WEBHOOK_SECRET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(
        values
    )
    assert all(value == "CHANGE-ME" for value in values.values()), values


def test_placeholders_stop_darkroom_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unedited template must not run: darkroom refuses these values."""
    from pydantic import ValidationError

    values = find(BASE, "Secret", "darkroom-secrets").obj["stringData"]
    for name in ("API_KEYS", "WEBHOOK_SECRET"):
        with monkeypatch.context() as env:
            env.setenv(name, values[name])
            with pytest.raises(ValidationError):
                Settings(_env_file=None)


def test_configmap_settings_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """darkroom's Settings read the ConfigMap as a container's environment."""
    for name, value in config_data().items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.redis_url == config_data()["REDIS_URL"]
    assert str(settings.registry_path) == config_data()["MODEL_CONFIG"]
    assert settings.storage_url.startswith("s3://")


# --- metrics ------------------------------------------------------------------

# The scrape job of each kind of darkroom pod: the alert rules and the dashboard
# select on these names (docs/observability.md).
SCRAPE_JOBS = {
    "api": "darkroom-api",
    "gpu-worker": "darkroom-worker",
    "webhooks": "darkroom-webhooks",
}
POD_MONITORS = by_kind(ALL, "PodMonitor")
POD_MONITOR_KEYS = {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel"}
ENDPOINT_KEYS = {
    "port",
    "path",
    "interval",
    "scrapeTimeout",
    "relabelings",
    "metricRelabelings",
    "authorization",
}


def pod_labels(workload: Manifest) -> dict[str, str]:
    return dict(workload.obj["spec"]["template"]["metadata"]["labels"])


def metrics_port(workload: Manifest) -> tuple[str, int]:
    """(port name, number) the pod announces in its prometheus.io/port annotation."""
    annotations = workload.obj["spec"]["template"]["metadata"]["annotations"]
    (container,) = containers(workload)
    number = int(annotations["prometheus.io/port"])
    names = [p["name"] for p in container.get("ports", []) if p["containerPort"] == number]
    assert len(names) == 1, f"{workload.label}: port {number} is not one named container port"
    return names[0], number


@pytest.mark.parametrize("workload", darkroom_workloads(), ids=ids(darkroom_workloads()))
def test_darkroom_pods_announce_their_metrics(workload: Manifest) -> None:
    """prometheus.io annotations on the pod template, naming the port that serves
    /metrics: the API's HTTP port, a worker's WORKER_METRICS_PORT."""
    annotations = workload.obj["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/scrape") == "true"
    assert annotations.get("prometheus.io/path") == "/metrics"
    name, number = metrics_port(workload)
    (container,) = containers(workload)
    if container["command"][1] == "api":
        assert name == "http"
        assert number == int(option_value(container["command"], "--port") or 0)
        return
    assert name == "metrics"
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env.get("WORKER_METRICS_PORT") == str(number)


@pytest.mark.parametrize("monitor", POD_MONITORS, ids=ids(POD_MONITORS))
def test_pod_monitor_shape(monitor: Manifest) -> None:
    assert monitor.obj["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor.obj["spec"]
    assert set(spec) <= POD_MONITOR_KEYS
    assert "namespaceSelector" not in spec, "its own namespace: the one darkroom is applied to"
    for endpoint in spec["podMetricsEndpoints"]:
        assert set(endpoint) <= ENDPOINT_KEYS


def test_api_pod_monitor_sends_the_metrics_token_of_the_secret() -> None:
    """METRICS_TOKEN: the API's /metrics may need it; the PodMonitor reads it from
    the Secret every darkroom pod takes its settings from (optional: it may be unset)."""
    [monitor] = [m for m in POD_MONITORS if m.obj["metadata"]["name"] == "darkroom-api"]
    [endpoint] = monitor.obj["spec"]["podMetricsEndpoints"]
    assert endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "darkroom-secrets", "key": "METRICS_TOKEN", "optional": True},
    }
    [secret] = [m for m in ALL if m.obj["kind"] == "Secret"]
    assert "METRICS_TOKEN" in secret.obj["stringData"]


@pytest.mark.parametrize("workload", darkroom_workloads(), ids=ids(darkroom_workloads()))
def test_one_pod_monitor_scrapes_each_darkroom_pod(workload: Manifest) -> None:
    """On the annotated port and path, under the component's scrape job name."""
    selected = pod_labels(workload)
    monitors = [
        m for m in POD_MONITORS if selects(m.obj["spec"]["selector"]["matchLabels"], selected)
    ]
    assert len(monitors) == 1, f"{workload.label}: {len(monitors)} PodMonitors select it"
    (endpoint,) = monitors[0].obj["spec"]["podMetricsEndpoints"]
    annotations = workload.obj["spec"]["template"]["metadata"]["annotations"]
    assert endpoint["port"] == metrics_port(workload)[0]
    assert endpoint["path"] == annotations["prometheus.io/path"]
    job = SCRAPE_JOBS[pod_labels(workload)["app.kubernetes.io/component"]]
    assert {"action": "replace", "targetLabel": "job", "replacement": job} in endpoint[
        "relabelings"
    ]


PROMETHEUS_TRIGGER_METADATA = {
    "serverAddress",
    "query",
    "queryParameters",
    "threshold",
    "activationThreshold",
    "namespace",
    "customHeaders",
    "ignoreNullValues",
    "unsafeSsl",
    "timeout",
    "authModes",
}


def keda_prometheus_patches() -> list[tuple[list[dict[str, Any]], dict[str, str]]]:
    """(JSON patch operations, target) of each patch in optional/keda-prometheus."""
    spec = yaml.safe_load((K8S / "optional" / "keda-prometheus" / KUSTOMIZATION).read_text())
    assert spec["kind"] == "Component"
    base = K8S / "optional" / "keda-prometheus"
    return [(yaml.safe_load((base / p["path"]).read_text()), p["target"]) for p in spec["patches"]]


def test_keda_prometheus_patches_target_scaled_objects() -> None:
    patches = keda_prometheus_patches()
    assert patches
    for ops, target in patches:
        assert (target["group"], target["version"], target["kind"]) == (
            "keda.sh",
            "v1alpha1",
            "ScaledObject",
        )
        scaled = find(SCALED_OBJECTS, "ScaledObject", target["name"])
        paths = {op["path"]: op for op in ops}
        assert paths["/spec/triggers"]["op"] == "replace"
        # The Redis triggers' formula would name triggers that are gone.
        assert "scalingModifiers" in scaled.obj["spec"]["advanced"]
        assert paths["/spec/advanced/scalingModifiers"]["op"] == "remove"


KEDA_PROMETHEUS_PATCHES = keda_prometheus_patches()


@pytest.mark.parametrize(
    ("ops", "target"), KEDA_PROMETHEUS_PATCHES, ids=[t["name"] for _, t in KEDA_PROMETHEUS_PATCHES]
)
def test_keda_prometheus_trigger(ops: list[dict[str, Any]], target: dict[str, str]) -> None:
    """Known fields, string values; the query counts the target's model (and the
    model-less jobs, for the primary model's workers only, as with the lists)."""
    scaled = find(SCALED_OBJECTS, "ScaledObject", target["name"])
    worker = find(GPU_WORKERS, "Deployment", scaled.obj["spec"]["scaleTargetRef"]["name"])
    model = pinned_model(worker)
    (triggers,) = [op["value"] for op in ops if op["path"] == "/spec/triggers"]
    for trigger in triggers:
        assert set(trigger) <= TRIGGER_KEYS
        assert trigger["type"] == "prometheus"
        metadata = trigger["metadata"]
        assert set(metadata) <= PROMETHEUS_TRIGGER_METADATA
        assert all(isinstance(v, str) for v in metadata.values()), metadata
        assert float(metadata["threshold"]) >= 1
        assert metadata["activationThreshold"] == "0", "wake from zero on the first job"
        assert metadata["ignoreNullValues"] == "false", "no data must not read as an empty queue"
        models = {
            value
            for selector in selectors(metadata["query"])
            for matcher in selector.matchers
            if matcher.label == "model"
            for value in matcher.literal_values() or []
        }
        primary = REGISTRY["runtime"]["primary_model"]
        assert models == {model} | ({ANY_MODEL} if model == primary else set())


# --- optional -----------------------------------------------------------------


def test_optional_redis_is_durable_and_never_evicts() -> None:
    redis_set = find(ALL, "StatefulSet", "darkroom-redis")
    (container,) = containers(redis_set)
    argv = container.get("command", []) + container.get("args", [])
    pairs = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert argv[0] == "redis-server"
    assert pairs["--appendonly"] == "yes"
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert redis_set.obj["spec"]["volumeClaimTemplates"], "the AOF needs a persistent volume"
    # Its Service is where config.yaml points darkroom.
    service = find(ALL, "Service", "darkroom-redis")
    url = urlparse(config_data()["REDIS_URL"])
    assert url.hostname == service.name
    assert url.port in {p["port"] for p in service.obj["spec"]["ports"]}


SENTINEL = K8S / "optional" / "sentinel"
SENTINEL_SETTINGS = {"REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_MIN_REPLICAS_ACK"}


def sentinel_patch() -> dict[str, Any]:
    """optional/sentinel's patch of the ConfigMap, checked to be one."""
    spec = yaml.safe_load((SENTINEL / KUSTOMIZATION).read_text(encoding="utf-8"))
    assert spec["kind"] == "Component"
    (path,) = kustomization_files(SENTINEL / KUSTOMIZATION)[1]
    (patch,) = load_yaml_documents(path)
    (entry,) = spec["patches"]
    target = (entry["target"]["kind"], entry["target"]["name"])
    assert target == (patch["kind"], patch["metadata"]["name"]) == ("ConfigMap", "darkroom-config")
    return dict(patch)


def test_sentinel_component_sets_valid_sentinel_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The three Sentinel settings, darkroom's names, valid; the sentinels are the
    chart's Service on 26379, the Redis darkroom's base already names."""
    added = sentinel_patch()["data"]
    assert set(added) == SENTINEL_SETTINGS
    assert set(added) <= setting_env_names()
    for name, value in {**config_data(), **added}.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    host = urlparse(config_data()["REDIS_URL"]).hostname
    assert settings.sentinel_addresses == [(host, 26379)]
    assert settings.redis_sentinel_master == "mymaster", "the Bitnami chart's master set"
    assert settings.redis_min_replicas_ack == 1


def test_sentinel_readme_matches_the_patch() -> None:
    readme = (SENTINEL / "README.md").read_text(encoding="utf-8")
    added = sentinel_patch()["data"]
    assert "--set sentinel.enabled=true" in readme
    for name, value in added.items():
        assert f"{name}={value}" in readme, name


def test_kubectl_kustomize_sentinel_component_reaches_every_darkroom_pod(tmp_path: Path) -> None:
    """An overlay with optional/sentinel: darkroom-config gains the settings, nothing
    else changes, and every darkroom container reads that ConfigMap with nothing
    of its own `env` overriding them."""
    built = build_with_component(tmp_path, "sentinel")
    base = {(m.kind, m.name): m.obj for m in BASE}
    assert {(d["kind"], d["metadata"]["name"]) for d in built} == set(base)
    for doc in built:
        if (doc["kind"], doc["metadata"]["name"]) != ("ConfigMap", "darkroom-config"):
            assert doc == base[(doc["kind"], doc["metadata"]["name"])]
    (config,) = [d for d in built if d["metadata"]["name"] == "darkroom-config"]
    assert config["data"] == {**config_data(), **sentinel_patch()["data"]}
    workloads = [d for d in built if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in workloads} == {m.name for m in darkroom_workloads()}
    for workload in workloads:
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert {"configMapRef": {"name": "darkroom-config"}} in container["envFrom"]
            assert not SENTINEL_SETTINGS & {e["name"] for e in container.get("env", [])}


def test_every_yaml_file_parses() -> None:
    for path in K8S.rglob("*.yaml"):
        assert load_yaml_documents(path), path
