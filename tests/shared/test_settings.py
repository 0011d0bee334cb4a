"""Settings: environment and `.env` over defaults; bad URLs refused with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from shared.settings import Settings

ENV_VARS = (
    "REDIS_URL",
    "MODEL_CONFIG",
    "REGISTRY_PATH",
    "PRIMARY_MODEL",
    "ENABLE_FALLBACK",
    "STORAGE_URL",
    "HF_CACHE_DIR",
    "OPENAI_API_KEY",
    "PUBLIC_BASE_URL",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


def test_defaults_without_environment() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.registry_path == Path("model_config.yaml")
    assert settings.primary_model is None
    assert settings.enable_fallback is None
    assert settings.storage_url == "file://./data/images"
    assert settings.hf_cache_dir is None
    assert settings.openai_api_key is None


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://redis.internal:6380/3")
    monkeypatch.setenv("MODEL_CONFIG", str(tmp_path / "models.yaml"))
    monkeypatch.setenv("PRIMARY_MODEL", "flux-dev")
    monkeypatch.setenv("ENABLE_FALLBACK", "false")
    monkeypatch.setenv("STORAGE_URL", "s3://bucket/prefix")
    monkeypatch.setenv("HF_CACHE_DIR", str(tmp_path / "hf"))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-123")

    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert settings.redis_url == "redis://redis.internal:6380/3"
    assert settings.registry_path == tmp_path / "models.yaml"
    assert settings.primary_model == "flux-dev"
    assert settings.enable_fallback is False
    assert settings.storage_url == "s3://bucket/prefix"
    assert settings.hf_cache_dir == tmp_path / "hf"
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-test-123"
    # The key never shows up when settings are printed or logged.
    assert "sk-test-123" not in repr(settings)


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("1", True), ("0", False)])
def test_enable_fallback_parses_booleans(
    monkeypatch: pytest.MonkeyPatch, raw: str, expected: bool
) -> None:
    monkeypatch.setenv("ENABLE_FALLBACK", raw)
    assert Settings(_env_file=None).enable_fallback is expected  # type: ignore[call-arg]


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "REDIS_URL=redis://from-dotenv:6379/5\n"
        f"MODEL_CONFIG={tmp_path / 'registry.yaml'}\n"
        "PRIMARY_MODEL=sd3-medium\n"
        "ENABLE_FALLBACK=true\n"
        "STORAGE_URL=file:///srv/images\n"
        "OPENAI_API_KEY=sk-dotenv\n"
    )
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.redis_url == "redis://from-dotenv:6379/5"
    assert settings.registry_path == tmp_path / "registry.yaml"
    assert settings.primary_model == "sd3-medium"
    assert settings.enable_fallback is True
    assert settings.storage_url == "file:///srv/images"
    assert settings.openai_api_key is not None
    assert settings.openai_api_key.get_secret_value() == "sk-dotenv"


def test_environment_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PRIMARY_MODEL=sdxl\nREDIS_URL=redis://from-dotenv:6379/5\n")
    monkeypatch.setenv("PRIMARY_MODEL", "playground")
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    assert settings.primary_model == "playground"
    assert settings.redis_url == "redis://from-dotenv:6379/5"


@pytest.mark.parametrize(
    "url", ["redis://h:6379/0", "rediss://user:pw@h:6380/1", "unix:///run/redis.sock"]
)
def test_good_redis_urls_accepted(url: str) -> None:
    assert Settings(_env_file=None, redis_url=url).redis_url == url  # type: ignore[call-arg]


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "memcached://h"])
def test_bad_redis_url_refused(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, redis_url=url)  # type: ignore[call-arg]
    assert "REDIS_URL must start with redis://, rediss:// or unix://" in str(info.value)


def test_bad_redis_url_from_environment_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "http://localhost:6379")
    with pytest.raises(ValidationError, match="REDIS_URL must start with redis://"):
        Settings(_env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize("url", ["http://bucket/x", "/var/images", "gs://bucket"])
def test_bad_storage_scheme_refused(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(_env_file=None, storage_url=url)  # type: ignore[call-arg]
    assert "STORAGE_URL must be file:///path or s3://bucket/prefix" in str(info.value)


def test_s3_storage_url_without_bucket_refused() -> None:
    with pytest.raises(ValidationError, match="needs a bucket name"):
        Settings(_env_file=None, storage_url="s3:///prefix")  # type: ignore[call-arg]


def test_public_base_url_trailing_slash_stripped() -> None:
    settings = Settings(_env_file=None, public_base_url="http://example.com/")  # type: ignore[call-arg]
    assert settings.public_base_url == "http://example.com"


def test_sentinel_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", "s-1:26379, s-2:26380,[::1]:26381")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "darkroom")
    monkeypatch.setenv("REDIS_MIN_REPLICAS_ACK", "1")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.sentinel_addresses == [("s-1", 26379), ("s-2", 26380), ("::1", 26381)]
    assert settings.redis_sentinel_master == "darkroom"
    assert settings.redis_min_replicas_ack == 1
    assert Settings(_env_file=None, redis_sentinels="").sentinel_addresses == []  # type: ignore[call-arg]


@pytest.mark.parametrize("value", ["s-1", "s-1:", ":26379", "s-1:port", "s-1:70000", "a:1,,b:2"])
def test_bad_sentinel_address_refused(value: str) -> None:
    with pytest.raises(ValidationError, match=r"REDIS_SENTINELS.*host:port"):
        Settings(_env_file=None, redis_sentinels=value)  # type: ignore[call-arg]
