"""deploy/observability (scrape configs, alert rules, dashboard) and the PromQL in
the Kubernetes extras, checked against darkroom's metric contract.

promtool checks the rules, runs their unit tests and checks the scrape configs;
every query (alerts, dashboard, PrometheusRule, KEDA trigger) may only name
darkroom's metrics, with their labels and label values; the gauges every API
replica repeats are only ever combined with max; the contract below is what
the code declares.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.cluster_stats import ANY_MODEL, NO_MODEL
from shared.constants import PRIORITIES
from tests.deploy.manifests import (
    K8S,
    KUSTOMIZATION,
    MODEL_CONFIG,
    ROOT,
    kustomization_files,
    load_compose,
    load_yaml_documents,
    option_value,
)
from tests.deploy.promql import grouping_labels, metric_names, selectors
from tests.support.system import require_program

# A real Prometheus scrapes the metrics.
pytestmark = pytest.mark.slow

OBSERVABILITY = ROOT / "deploy" / "observability"
RULES_FILE = OBSERVABILITY / "darkroom-alerts.yml"
RULES_TESTS = OBSERVABILITY / "darkroom-alerts.test.yml"
COMPOSE_PROMETHEUS = OBSERVABILITY / "prometheus.yml"
KUBERNETES_PROMETHEUS = OBSERVABILITY / "prometheus-kubernetes.yml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
MONITORING = K8S / "optional" / "monitoring"
KEDA_PROMETHEUS = K8S / "optional" / "keda-prometheus"

# --- the contract -------------------------------------------------------------

API, WORKER, WEBHOOKS = "darkroom-api", "darkroom-worker", "darkroom-webhooks"
SCRAPE_JOBS = {API, WORKER, WEBHOOKS}
REGISTRY_MODELS = set(yaml.safe_load(MODEL_CONFIG.read_text(encoding="utf-8"))["models"])
MODELS = frozenset(REGISTRY_MODELS | {ANY_MODEL, NO_MODEL})
PRIORITY = frozenset(PRIORITIES)
# Worker record states (shared/workers.py, worker/boot.py).
STATES = frozenset({"loading", "starting", "ready", "busy", "no_model", "stopping"})
ANY_VALUE = None


@dataclass(frozen=True)
class Metric:
    kind: str  # counter | gauge | histogram
    job: str  # the scrape job whose targets expose it
    # Declared label names -> the values they take (ANY_VALUE: not enumerable).
    labels: dict[str, frozenset[str] | None] = field(default_factory=dict)


def _histogram(job: str, **labels: frozenset[str] | None) -> Metric:
    return Metric("histogram", job, labels)


CONTRACT: dict[str, Metric] = {
    "darkroom_http_requests_total": Metric(
        "counter", API, {"method": ANY_VALUE, "route": ANY_VALUE, "status": ANY_VALUE}
    ),
    "darkroom_http_request_duration_seconds": _histogram(API, method=ANY_VALUE, route=ANY_VALUE),
    "darkroom_jobs_submitted_total": Metric(
        "counter", API, {"model": MODELS, "priority": PRIORITY}
    ),
    "darkroom_queue_depth": Metric("gauge", API, {"model": MODELS, "priority": PRIORITY}),
    "darkroom_jobs_running": Metric("gauge", API, {"model": MODELS}),
    "darkroom_workers": Metric("gauge", API, {"model": MODELS, "state": STATES}),
    "darkroom_workers_serving": Metric("gauge", API, {"model": MODELS}),
    "darkroom_webhook_deliveries_pending": Metric("gauge", API),
    # Not in the list, but served by the API (api/metrics.py).
    "darkroom_redis_up": Metric("gauge", API),
    "darkroom_jobs_finished_total": Metric(
        "counter",
        WORKER,
        {"model": MODELS, "status": frozenset({"succeeded", "failed", "canceled"})},
    ),
    "darkroom_job_queue_wait_seconds": _histogram(WORKER, model=MODELS),
    "darkroom_job_run_seconds": _histogram(WORKER, model=MODELS),
    "darkroom_job_inference_seconds": _histogram(WORKER, model=MODELS),
    "darkroom_batch_size": _histogram(WORKER, model=MODELS),
    "darkroom_model_load_seconds": _histogram(
        WORKER, model=MODELS, source=frozenset({"host", "disk"})
    ),
    "darkroom_model_swaps_total": Metric("counter", WORKER, {"model": MODELS}),
    "darkroom_previews_total": Metric("counter", WORKER, {"model": MODELS}),
    "darkroom_preview_seconds": _histogram(WORKER, model=MODELS),
    "darkroom_models_resident": Metric(
        "gauge", WORKER, {"model": MODELS, "tier": frozenset({"device", "host"})}
    ),
    "darkroom_worker_busy": Metric("gauge", WORKER),
    "darkroom_gpu_memory_bytes": Metric(
        "gauge",
        WORKER,
        {"device": ANY_VALUE, "kind": frozenset({"allocated", "reserved", "peak"})},
    ),
    "darkroom_storage_spool_bytes": Metric("gauge", WORKER),
    "darkroom_storage_retries_total": Metric("counter", WORKER),
    "darkroom_webhook_deliveries_total": Metric(
        "counter", WEBHOOKS, {"outcome": frozenset({"delivered", "retrying", "failed", "gone"})}
    ),
    "darkroom_webhook_delivery_seconds": _histogram(WEBHOOKS),
    "darkroom_webhook_deferred_total": Metric("counter", WEBHOOKS),
}
# Read from Redis by every API replica: equal on all of them, so combined with
# max, never summed.
CLUSTER_GAUGES = {
    "darkroom_queue_depth",
    "darkroom_jobs_running",
    "darkroom_workers",
    "darkroom_workers_serving",
    "darkroom_webhook_deliveries_pending",
    "darkroom_redis_up",
}
# Labels Prometheus adds to every series of a target (the pod ones on Kubernetes).
TARGET_LABELS: dict[str, frozenset[str] | None] = {
    "job": frozenset(SCRAPE_JOBS),
    "instance": ANY_VALUE,
    "namespace": ANY_VALUE,
    "pod": ANY_VALUE,
}
# A multi-process pool's gauges in "liveall" mode carry the process's pid.
MULTIPROCESS_LABELS = {"darkroom_worker_busy": {"pid": ANY_VALUE}}


def series_labels(series: str) -> dict[str, frozenset[str] | None] | None:
    """The labels a series name may be selected with, or None if it is not darkroom's."""
    if series == "up":
        return dict(TARGET_LABELS)
    for suffix, extra in (("_bucket", {"le": ANY_VALUE}), ("_sum", {}), ("_count", {})):
        base = series.removesuffix(suffix)
        if base != series and base in CONTRACT and CONTRACT[base].kind == "histogram":
            return {**CONTRACT[base].labels, **extra, **TARGET_LABELS}
    metric = CONTRACT.get(series)
    if metric is None or metric.kind == "histogram":
        return None
    return {**metric.labels, **MULTIPROCESS_LABELS.get(series, {}), **TARGET_LABELS}


# --- where the PromQL is --------------------------------------------------------


def rules_groups() -> list[dict[str, Any]]:
    return list(yaml.safe_load(RULES_FILE.read_text(encoding="utf-8"))["groups"])


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in rules_groups() for rule in group["rules"]]


def prometheus_rule() -> dict[str, Any]:
    (rule,) = load_yaml_documents(MONITORING / "prometheusrule.yaml")
    return dict(rule)


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def dashboard_panels() -> Iterator[dict[str, Any]]:
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def dashboard_queries() -> list[str]:
    return [t["expr"] for p in dashboard_panels() for t in p.get("targets", [])]


def keda_queries() -> list[str]:
    """The prometheus trigger queries the keda-prometheus component patches in."""
    queries = []
    _, patches = kustomization_files(KEDA_PROMETHEUS / KUSTOMIZATION)
    for patch in patches:
        for op in yaml.safe_load(patch.read_text(encoding="utf-8")):
            if op["path"] == "/spec/triggers":
                queries += [t["metadata"]["query"] for t in op["value"]]
    return queries


def all_queries() -> list[tuple[str, str]]:
    """(where, query) for every PromQL expression darkroom ships."""
    found = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]
    for group in prometheus_rule()["spec"]["groups"]:
        found += [(f"PrometheusRule {r['alert']}", r["expr"]) for r in group["rules"]]
    found += [(f"dashboard #{i}", q) for i, q in enumerate(dashboard_queries())]
    found += [(f"KEDA #{i}", q) for i, q in enumerate(keda_queries())]
    return found


QUERIES = all_queries()


# --- promtool -------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_program("promtool", "prometheus")


def run_promtool(promtool: str, *args: str, cwd: Path = OBSERVABILITY) -> str:
    result = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def test_rules_pass_promtool_check(promtool: str) -> None:
    output = run_promtool(promtool, "check", "rules", RULES_FILE.name)
    assert f"{len(alert_rules())} rules found" in output


def test_rules_unit_tests_pass(promtool: str) -> None:
    """darkroom-alerts.test.yml: each alert fires when it should and only then."""
    run_promtool(promtool, "test", "rules", RULES_TESTS.name)


def test_compose_scrape_config_passes_promtool(promtool: str, tmp_path: Path) -> None:
    """The compose config, with the rules file it names (relative path) checked too.

    promtool wants the METRICS_TOKEN file it names to exist: compose writes it
    into the container; here it is a file of the test's.
    """
    config = yaml.safe_load(COMPOSE_PROMETHEUS.read_text(encoding="utf-8"))
    _with_token_files(config, tmp_path)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    shutil.copy(RULES_FILE, tmp_path / RULES_FILE.name)
    output = run_promtool(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert "1 rule files found" in output


def _with_token_files(config: dict[str, Any], tmp_path: Path) -> None:
    """Point each job's credentials file at an empty file of the test's; the API's
    job must have one (METRICS_TOKEN)."""
    token = tmp_path / "metrics-token"
    token.write_text("")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "credentials_file" in jobs["darkroom-api"]["authorization"]
    for job in jobs.values():
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token)


def test_kubernetes_scrape_config_passes_promtool(promtool: str, tmp_path: Path) -> None:
    """Debian's promtool is built without Kubernetes discovery: the file is checked
    with each pod discovery swapped for an empty static one (relabelling, regexes,
    everything else as written)."""
    config = yaml.safe_load(KUBERNETES_PROMETHEUS.read_text(encoding="utf-8"))
    for job in config["scrape_configs"]:
        assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}], job["job_name"]
        job["static_configs"] = [{"targets": []}]
    _with_token_files(config, tmp_path)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    shutil.copy(RULES_FILE, tmp_path / RULES_FILE.name)
    run_promtool(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """Grafana's variables replaced by values, each query checked as a recording rule."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(q)}
        for i, q in enumerate(dashboard_queries())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run_promtool(promtool, "check", "rules", path.name, cwd=tmp_path)


def grafana_to_promql(query: str) -> str:
    intervals = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
    for variable, value in intervals.items():
        query = query.replace(variable, value)
    # Template variables appear only inside label matchers' regexes.
    return re.sub(r"\$\{?\w+\}?", ".*", query)


# --- the queries, against the contract -------------------------------------------


def test_promql_reader() -> None:
    query = (
        'sum by (model) (rate(a_total{x="1", y=~"b|c"}[5m])) / on (model) group_left '
        'max(b{z!="}"}) unless histogram_quantile(0.95, c_bucket) offset 5m'
    )
    assert [s.metric for s in selectors(query)] == ["a_total", "b", "c_bucket"]
    first = selectors(query)[0]
    assert [(m.label, m.literal_values()) for m in first.matchers] == [
        ("x", ["1"]),
        ("y", ["b", "c"]),
    ]
    assert grouping_labels(query, selectors(query)[1].position) == []
    assert grouping_labels(query, first.position) is None


def test_there_are_queries_everywhere() -> None:
    sources = {where.split(" ")[0] for where, _ in QUERIES}
    assert sources == {"alert", "PrometheusRule", "dashboard", "KEDA"}


@pytest.mark.parametrize(("where", "query"), QUERIES, ids=[w for w, _ in QUERIES])
def test_queries_use_contract_metrics_labels_and_values(where: str, query: str) -> None:
    found = selectors(query)
    assert found, f"{where}: no metric in {query!r}"
    for selector in found:
        assert selector.metric is not None, f"{where}: a selector without a metric name"
        allowed = series_labels(selector.metric)
        assert allowed is not None, f"{where}: {selector.metric} is not a darkroom metric"
        for matcher in selector.matchers:
            assert matcher.label in allowed, f"{where}: {selector.metric} has no {matcher.label}"
            values, known = matcher.literal_values(), allowed[matcher.label]
            if values is None or known is None or "$" in matcher.value:
                continue
            unknown = set(values) - known
            assert not unknown, f"{where}: {selector.metric}{{{matcher.label}}} never is {unknown}"


@pytest.mark.parametrize(("where", "query"), QUERIES, ids=[w for w, _ in QUERIES])
def test_cluster_gauges_are_combined_with_max(where: str, query: str) -> None:
    """Every API replica reports them: max by (...) over labels that are not the
    target's, so that N replicas never count N times."""
    for selector in selectors(query):
        if selector.metric not in CLUSTER_GAUGES:
            continue
        grouping = grouping_labels(query, selector.position)
        assert grouping is not None, f"{where}: {selector.metric} is not inside max(...)"
        assert not set(grouping) & set(TARGET_LABELS), f"{where}: max by {grouping}"


def test_contract_is_what_the_code_declares() -> None:
    """Names, types, labels and the process that serves each, read from the code."""
    from prometheus_client.metrics import MetricWrapperBase
    from prometheus_client.parser import text_string_to_metric_families

    from api.metrics import ApiMetrics
    from shared.cluster_stats import ClusterStats
    from worker import metrics as worker_metrics
    from worker import webhook_metrics

    api = ApiMetrics()
    wrappers: list[tuple[str, MetricWrapperBase]] = [
        (API, m) for m in (api.requests, api.duration, api.submitted)
    ]
    for job, module in ((WORKER, worker_metrics), (WEBHOOKS, webhook_metrics)):
        wrappers += [(job, m) for m in vars(module).values() if isinstance(m, MetricWrapperBase)]
    declared: dict[str, tuple[str | None, str, set[str]]] = {}
    for job, metric in wrappers:
        # prometheus_client has no public accessor for a metric's declared labels.
        name = metric._name + ("_total" if metric._type == "counter" else "")
        declared[name] = (metric._type, job, set(metric._labelnames))
    # The cluster gauges exist only in a scrape: render one.
    stats = ClusterStats(
        queued={("sdxl", "normal"): 1},
        running={"sdxl": 1},
        workers={("sdxl", "ready"): 1},
        serving={"sdxl": 1},
    )
    for family in text_string_to_metric_families(api.render(stats).decode()):
        if family.type == "gauge":
            labels = {label for sample in family.samples for label in sample.labels}
            declared[family.name] = ("gauge", API, labels)
    expected = {name: (m.kind, m.job, set(m.labels)) for name, m in CONTRACT.items()}
    assert declared == expected


def test_queue_wait_threshold_is_a_bucket_boundary() -> None:
    """p95 > threshold then reads exactly "over 5 % of the jobs waited longer"."""
    from worker.metrics import WAIT_BUCKETS

    (rule,) = [r for r in alert_rules() if r["alert"] == "DarkroomQueueWaitHigh"]
    threshold = float(re.findall(r">\s*([\d.]+)\s*$", rule["expr"].strip())[0])
    assert threshold in WAIT_BUCKETS


# --- alert rules ------------------------------------------------------------------


def test_prometheus_rule_holds_the_rules_file() -> None:
    rule = prometheus_rule()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == rules_groups(), (
        "deploy/k8s/optional/monitoring/prometheusrule.yaml differs from "
        "deploy/observability/darkroom-alerts.yml: copy its groups into spec.groups"
    )


def test_rules_file_name_says_alerts() -> None:
    assert "alerts" in RULES_FILE.name


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: str(r["alert"]))
def test_alert_rule_shape(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"Darkroom[A-Z][A-Za-z]+", rule["alert"])
    assert re.fullmatch(r"\d+[smh]", rule["for"]), "a `for` duration: no alert on one blip"
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["annotations"]["summary"]
    assert rule["annotations"]["description"]


def test_each_alert_is_unit_tested_firing_and_silent() -> None:
    tests = yaml.safe_load(RULES_TESTS.read_text(encoding="utf-8"))
    assert tests["rule_files"] == [RULES_FILE.name]
    fires: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else silent).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names <= fires, f"never shown firing: {names - fires}"
    assert names <= silent, f"never shown silent: {names - silent}"


def test_alerts_select_darkroom_scrape_jobs() -> None:
    for where, query in QUERIES:
        for selector in selectors(query):
            for matcher in selector.matchers:
                if matcher.label == "job":
                    assert set(matcher.literal_values() or []) <= SCRAPE_JOBS, where


# --- scrape configs -----------------------------------------------------------------


def scrape_jobs(path: Path) -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert config["rule_files"] == [RULES_FILE.name]
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_scrape_configs_use_darkroom_job_names() -> None:
    assert set(scrape_jobs(COMPOSE_PROMETHEUS)) == SCRAPE_JOBS
    assert set(scrape_jobs(KUBERNETES_PROMETHEUS)) == SCRAPE_JOBS


def test_kubernetes_scrape_config_keeps_each_component() -> None:
    """Each job keeps the annotated pods of one darkroom component."""
    components = {API: "api", WORKER: "gpu-worker", WEBHOOKS: "webhooks"}
    for name, job in scrape_jobs(KUBERNETES_PROMETHEUS).items():
        keeps = [r for r in job["relabel_configs"] if r.get("action") == "keep"]
        regexes = {r["regex"] for r in keeps}
        assert "true" in regexes, f"{name}: does not follow prometheus.io/scrape"
        assert f"darkroom;{components[name]}" in regexes, name


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in (service.get("environment") or {}).items()}


def test_compose_scrape_targets_are_the_services() -> None:
    services = load_compose(env={})["services"]
    jobs = scrape_jobs(COMPOSE_PROMETHEUS)
    (api_target,) = jobs[API]["static_configs"][0]["targets"]
    assert api_target == f"api:{option_value(services['api']['command'], '--port')}"
    # Every GPU worker service answers to the name the worker job resolves.
    (workers_sd,) = jobs[WORKER]["dns_sd_configs"]
    gpu_workers = [s for s in services.values() if s.get("command", [None])[1:2] == ["worker"]]
    assert gpu_workers
    for worker in gpu_workers:
        aliases = worker["networks"]["default"]["aliases"]
        assert set(workers_sd["names"]) <= set(aliases)
        assert compose_env(worker)["WORKER_METRICS_PORT"] == str(workers_sd["port"])
    (hooks_sd,) = jobs[WEBHOOKS]["dns_sd_configs"]
    assert hooks_sd["names"] == ["webhooks"]
    assert compose_env(services["webhooks"])["WORKER_METRICS_PORT"] == str(hooks_sd["port"])


def test_compose_monitoring_is_an_opt_in_profile() -> None:
    services = load_compose(env={})["services"]
    monitoring = {n for n, s in services.items() if "observability" in s.get("profiles", [])}
    assert monitoring == {"prometheus", "grafana"}
    for name in monitoring:
        assert services[name]["profiles"] == ["observability"]
    prometheus = services["prometheus"]
    assert image_repository(prometheus["image"]) == "prom/prometheus"
    config = next(a for a in prometheus["command"] if a.startswith("--config.file="))
    config_path = Path(config.split("=", 1)[1])
    assert config_path.name == COMPOSE_PROMETHEUS.name
    assert f"./deploy/observability:{config_path.parent}:ro" in prometheus["volumes"]
    grafana = services["grafana"]
    mounted = {volume.split(":")[0] for volume in grafana["volumes"]}
    assert "./deploy/observability/grafana-dashboard.json" in mounted
    for source in mounted:
        if source.startswith("./"):
            assert (ROOT / source).is_file(), source


def image_repository(image: str) -> str:
    return image.rsplit(":", 1)[0]


# --- dashboard --------------------------------------------------------------------


def test_dashboard_is_a_grafana_dashboard() -> None:
    board = dashboard()
    assert board["title"]
    assert board["uid"]
    assert isinstance(board["schemaVersion"], int)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    # A data source variable: the same file imports anywhere and provisions as is.
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["definition"] == "label_values(darkroom_queue_depth, model)"
    panels = list(dashboard_panels())
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip()


def test_dashboard_shows_what_operators_need() -> None:
    """Queue depth per model, wait and run p50/p95, throughput, failures, workers by
    state, GPU memory, HTTP traffic and latency, webhook deliveries."""
    queries = dashboard_queries()
    used = set().union(*(metric_names(q) for q in queries))
    assert {
        "darkroom_queue_depth",
        "darkroom_jobs_finished_total",
        "darkroom_workers",
        "darkroom_gpu_memory_bytes",
        "darkroom_http_requests_total",
        "darkroom_http_request_duration_seconds_bucket",
        "darkroom_webhook_deliveries_total",
    } <= used
    for histogram in ("darkroom_job_queue_wait_seconds", "darkroom_job_run_seconds"):
        quantiles = {
            float(q)
            for query in queries
            if f"{histogram}_bucket" in query
            for q in re.findall(r"histogram_quantile\(([\d.]+)", query)
        }
        assert {0.5, 0.95} <= quantiles, histogram
    assert any("by (state)" in q and "darkroom_workers" in q for q in queries)
    assert any('status="failed"' in q for q in queries)
