"""docker-compose.yml, checked offline (no Docker here): the Compose
specification's JSON schema, then the structure darkroom needs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest

from shared.constants import WORKER_KEY_PREFIX
from shared.settings import Settings
from tests.deploy.manifests import (
    COMPOSE_FILE,
    DOCKERFILES,
    EXTERNAL_ENV,
    IMAGE_FOR_COMMAND,
    ROOT,
    compose_variables,
    image_name,
    interpolate,
    iter_strings,
    load_compose,
    option_value,
    parse_duration_s,
    setting_env_names,
)

CONFIG = load_compose(env={})
SERVICES: dict[str, dict[str, Any]] = CONFIG["services"]
REQUIRED = {"redis", "s3", "api", "worker", "webhooks"}
DARKROOM = {"api", "worker", "webhooks"}
# Profile sentinel: replicas of `redis` and the sentinels that fail it over.
REPLICAS = {"redis-replica-1", "redis-replica-2"}
SENTINELS = {"sentinel-1", "sentinel-2", "sentinel-3"}
SENTINEL_PORT = 26379


def compose_schema() -> dict[str, Any]:
    """The Compose specification's schema, as check-jsonschema ships it (offline)."""
    pytest.importorskip("check_jsonschema")
    from importlib.resources import files

    vendor = files("check_jsonschema.builtin_schemas.vendor")
    return dict(json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8")))


@pytest.mark.parametrize("env", [None, {}, {"GPU_WORKERS": "4", "PRIMARY_MODEL": "flux-schnell"}])
def test_compose_spec_schema(env: dict[str, str] | None) -> None:
    """Valid as written (variables unexpanded) and after interpolation."""
    import jsonschema

    config = load_compose(env)
    validator = jsonschema.Draft202012Validator(compose_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_interpolation() -> None:
    assert interpolate("${A:-x}-${B-y}-$$C-${A}", {}) == "x-y-$C-"
    assert interpolate("${A:-x}/${A-y}", {"A": ""}) == "x/"
    with pytest.raises(ValueError, match="set A"):
        interpolate("${A:?set A}", {})


def test_services() -> None:
    assert set(SERVICES) >= REQUIRED
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"


def one_shot_services() -> set[str]:
    """Services others wait on to *complete*: they exit, so they have no healthcheck."""
    return {
        dependency
        for service in SERVICES.values()
        for dependency, condition in (service.get("depends_on") or {}).items()
        if isinstance(condition, dict)
        and condition.get("condition") == "service_completed_successfully"
    }


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_healthchecks(name: str) -> None:
    service = SERVICES[name]
    if name in one_shot_services():
        assert "healthcheck" not in service
        return
    check = service.get("healthcheck")
    assert check, f"{name} has no healthcheck"
    assert check["test"][0] in {"CMD", "CMD-SHELL"}
    for key in ("interval", "timeout", "start_period"):
        if key in check:
            parse_duration_s(check[key])


def test_services_wait_for_healthy_dependencies() -> None:
    for name, service in SERVICES.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            expected = (
                "service_completed_successfully"
                if dependency in one_shot_services()
                else "service_healthy"
            )
            assert condition == {"condition": expected}, f"{name} -> {dependency}"


def test_redis_persists_and_never_evicts() -> None:
    command = SERVICES["redis"]["command"]
    pairs = dict(zip(command[1::2], command[2::2], strict=False))
    assert command[0] == "redis-server"
    assert pairs["--appendonly"] == "yes"
    assert pairs["--maxmemory-policy"] == "noeviction"
    assert any(str(v).endswith(":/data") for v in SERVICES["redis"]["volumes"])


def test_s3_is_seaweedfs() -> None:
    s3 = SERVICES["s3"]
    assert "seaweedfs" in s3["image"]
    assert "/healthz" in " ".join(s3["healthcheck"]["test"])
    config = (ROOT / "deploy" / "seaweedfs-s3.json").read_text(encoding="utf-8")
    identity = json.loads(config)["identities"][0]["credentials"][0]
    env = SERVICES["api"]["environment"]
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        identity["accessKey"],
        identity["secretKey"],
    )


def test_api() -> None:
    api = SERVICES["api"]
    assert api["build"]["dockerfile"] == "deploy/api.Dockerfile"
    assert api["command"][:2] == ["darkroom", "api"]
    assert "/readyz" in " ".join(api["healthcheck"]["test"])


@pytest.mark.parametrize("env", [{}, {"GPU_WORKERS": "3"}])
def test_gpu_worker_replicas_and_devices(env: dict[str, str]) -> None:
    worker = load_compose(env)["services"]["worker"]
    deploy = worker["deploy"]
    assert int(deploy["replicas"]) == int(env.get("GPU_WORKERS", "1"))
    devices = deploy["resources"]["reservations"]["devices"]
    gpus = [d for d in devices if d.get("capabilities") == ["gpu"]]
    assert len(gpus) == 1
    assert gpus[0]["driver"] == "nvidia"
    assert gpus[0]["count"] == 1
    # Replicas cannot share a fixed host port or container name.
    assert "ports" not in worker
    assert "container_name" not in worker


def test_gpu_worker() -> None:
    worker = SERVICES["worker"]
    assert worker["command"][:2] == ["darkroom", "worker"]
    assert option_value(worker["command"], "--name") == "gpu@%h"
    code = worker["healthcheck"]["test"]
    assert code[:3] == ["CMD", "python", "-c"]
    assert f"'{WORKER_KEY_PREFIX}gpu@' + socket.gethostname()" in code[3]
    # Model downloads take long on a first start; a stop lets the running job end.
    assert parse_duration_s(worker["healthcheck"]["start_period"]) >= 600
    grace = parse_duration_s(worker["stop_grace_period"])
    assert grace >= Settings.model_fields["job_time_limit_s"].default
    env = worker["environment"]
    assert f"models:{env['HF_CACHE_DIR']}" in worker["volumes"]


def test_webhook_worker() -> None:
    hooks = SERVICES["webhooks"]
    assert hooks["command"] == ["darkroom", "webhooks"]
    assert "deploy" not in hooks, "no GPU for webhooks"
    assert "webhooks-0@" in hooks["healthcheck"]["test"][3]


@pytest.mark.parametrize("name", sorted(DARKROOM))
def test_each_darkroom_service_builds_its_image(name: str) -> None:
    """The API and the webhook worker: the slim image; GPU workers: the CUDA one."""
    service = SERVICES[name]
    image = image_name(service["image"])
    assert image == IMAGE_FOR_COMMAND[service["command"][1]], name
    # Built here (`docker compose up --build`), from that image's Dockerfile.
    assert service["build"] == {"context": ".", "dockerfile": DOCKERFILES[image]}
    assert (ROOT / DOCKERFILES[image]).is_file()


def test_darkroom_services_share_settings() -> None:
    env = SERVICES["api"]["environment"]
    for name in DARKROOM:
        service = SERVICES[name]
        assert service["env_file"] == [{"path": ".env", "required": False}]
        for key, value in env.items():
            assert service["environment"][key] == value, f"{name}: {key}"
    known = setting_env_names() | EXTERNAL_ENV
    for name in DARKROOM:
        for key in SERVICES[name]["environment"]:
            assert key in known, f"{name}: {key} is not a darkroom setting"


def test_secrets_come_from_dotenv_only() -> None:
    """API keys and signing secrets are never written into the compose file."""
    for name in DARKROOM:
        assert not {"API_KEYS", "WEBHOOK_SECRET", "HF_TOKEN", "OPENAI_API_KEY"} & set(
            SERVICES[name]["environment"]
        )


def test_env_example_documents_every_variable() -> None:
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", example, flags=re.MULTILINE))
    used = compose_variables(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert used <= documented, f"not in .env.example: {used - documented}"
    for secret in ("API_KEYS", "WEBHOOK_SECRET", "HF_TOKEN"):
        assert secret in documented
    # Every active line is a darkroom setting or a compose variable.
    assert documented <= setting_env_names() | EXTERNAL_ENV | used


def test_named_volumes_are_declared() -> None:
    declared = set(CONFIG.get("volumes") or {})
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if not source.startswith((".", "/")):
                assert source in declared, source


def test_no_stray_dollar_signs() -> None:
    """A lone $ in a command or healthcheck would be interpolated by compose."""
    raw = load_compose()
    for name, service in raw["services"].items():
        for text in iter_strings({k: service.get(k) for k in ("command", "healthcheck")}):
            assert "$" not in text.replace("$$", ""), f"{name}: {text}"


# --- profile sentinel ----------------------------------------------------------


def pairs(argv: list[str]) -> dict[str, str]:
    """`--option value` pairs of a redis-server command line."""
    return dict(zip(argv[1::2], argv[2::2], strict=False))


def startup_script(name: str) -> str:
    """The shell script a Sentinel-profile service runs (`sh -c SCRIPT`)."""
    service = SERVICES[name]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    (script,) = service["command"]
    return str(script)


def generated_conf(name: str) -> list[str]:
    """The config file the service's script writes on its first start, as written
    for this service (its ANNOUNCE_HOSTNAME filled in)."""
    body = startup_script(name).split("<<EOF\n", 1)[1].split("\nEOF\n", 1)[0]
    return body.replace(
        "${ANNOUNCE_HOSTNAME}", SERVICES[name]["environment"]["ANNOUNCE_HOSTNAME"]
    ).splitlines()


def documented_settings() -> dict[str, str]:
    """The darkroom settings the compose file's comment says to put in .env."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    return dict(re.findall(r"^ *# +(REDIS_[A-Z_]+)=(\S+)$", text, flags=re.MULTILINE))


def test_sentinel_profile_services() -> None:
    """Only the replicas and sentinels are in it; darkroom runs with or without it."""
    profiled = {
        name for name, service in SERVICES.items() if "sentinel" in service.get("profiles", [])
    }
    assert profiled == REPLICAS | SENTINELS
    for name in profiled:
        service = SERVICES[name]
        assert service["profiles"] == ["sentinel"]
        assert service["image"] == SERVICES["redis"]["image"]
        # Reached on the compose network by service name, never from the host.
        assert "ports" not in service
        assert service["environment"] == {"ANNOUNCE_HOSTNAME": name}
        assert service["volumes"] == [f"{name}-data:/data"]
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
    for name in REQUIRED:
        assert "profiles" not in SERVICES[name]


@pytest.mark.parametrize("name", sorted(REPLICAS | SENTINELS))
def test_sentinel_profile_scripts(name: str) -> None:
    """Valid shell; the config is written once (Sentinel's rewrites of it survive a
    restart, in /data, the image's working directory) and handed to the image's
    entrypoint, which gives /data to the redis user and drops root."""
    script = startup_script(name)
    sh = shutil.which("sh")
    assert sh is not None
    syntax = subprocess.run([sh, "-n", "-c", script], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr
    lines = script.strip().splitlines()
    conf = "sentinel.conf" if name in SENTINELS else "redis.conf"
    assert lines[0] == f"[ -f {conf} ] || cat > {conf} <<EOF"
    extra = " --sentinel" if name in SENTINELS else ""
    assert lines[-1] == f"exec docker-entrypoint.sh redis-server {conf}{extra}"


@pytest.mark.parametrize("name", sorted(REPLICAS))
def test_replicas_follow_redis_and_keep_its_durability(name: str) -> None:
    conf = dict(line.split(" ", 1) for line in generated_conf(name))
    master = pairs(SERVICES["redis"]["command"])
    assert conf["replicaof"] == "redis 6379"
    # A replica is promoted some day: it must persist and never evict, as `redis`.
    assert conf["appendonly"] == master["--appendonly"] == "yes"
    assert conf["maxmemory-policy"] == master["--maxmemory-policy"] == "noeviction"
    # Sentinels know every server by its service name, `redis` once it was demoted too.
    assert conf["replica-announce-ip"] == name
    assert master["--replica-announce-ip"] == "redis"


@pytest.mark.parametrize("name", sorted(SENTINELS))
def test_sentinels_monitor_redis_by_name(name: str) -> None:
    conf = generated_conf(name)
    options = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in conf}
    master = documented_settings()["REDIS_SENTINEL_MASTER"]
    (monitor,) = [line.split() for line in conf if line.startswith("sentinel monitor ")]
    assert monitor[2:5] == [master, "redis", "6379"]
    # A majority of the sentinels, so that two halves never both fail over.
    assert len(SENTINELS) // 2 + 1 <= int(monitor[5]) <= len(SENTINELS)
    assert options["port"] == str(SENTINEL_PORT)
    # Hostnames: read before `monitor` resolves "redis", and announced to others.
    resolve = conf.index("sentinel resolve-hostnames yes")
    assert resolve < conf.index(" ".join(monitor))
    assert "sentinel announce-hostnames yes" in conf
    assert options["sentinel announce-ip"] == name
    down_after = int(options[f"sentinel down-after-milliseconds {master}"])
    assert 1000 <= down_after < int(options[f"sentinel failover-timeout {master}"])
    assert options[f"sentinel parallel-syncs {master}"] == "1"
    assert f"sentinel ckquorum {master}" in " ".join(SERVICES[name]["healthcheck"]["test"])


def test_compose_comment_points_darkroom_at_the_sentinels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The .env lines the comment gives name these sentinels and are valid settings."""
    documented = documented_settings()
    assert set(documented) == {"REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_MIN_REPLICAS_ACK"}
    assert set(documented) <= setting_env_names()
    for name, value in {**SERVICES["api"]["environment"], **documented}.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)
    assert settings.sentinel_addresses == [(name, SENTINEL_PORT) for name in sorted(SENTINELS)]
    assert 1 <= settings.redis_min_replicas_ack <= len(REPLICAS)
