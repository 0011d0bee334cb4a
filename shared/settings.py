"""Process settings: environment and `.env` over `model_config.yaml` over defaults.

Only what varies per deployment lives here (where Redis is, where images go,
the seed's override variables). The model registry itself is data, loaded by
`shared.registry`; `get_registry()` applies the overrides read here on top of it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.apikeys import check_plain_key, hash_key, read_key_file, split_api_keys
from shared.constants import (
    DEFAULT_FAIR_SHARE_HALF_LIFE_S,
    DEFAULT_JOB_TTL_S,
    DEFAULT_STORAGE_RETRY_MAX_DELAY_S,
    DEFAULT_STORAGE_RETRY_S,
    DEFAULT_STORAGE_SPOOL_BYTES,
    DEFAULT_SWAP_AFTER_S,
)
from shared.keypolicy import DEFAULT_POLICY, KeyPolicy
from shared.sizes import parse_size


class Settings(BaseSettings):
    # hide_input_in_errors: a refused API_KEYS or WEBHOOK_SECRET must not be echoed into logs.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    redis_url: str = "redis://127.0.0.1:6379/0"
    # High availability (docs/high-availability.md): with REDIS_SENTINELS set, every
    # part asks these sentinels where the master named REDIS_SENTINEL_MASTER is, and
    # again after a failover; REDIS_URL still gives the database number, password
    # and TLS, its host is not used.
    redis_sentinels: str | None = Field(
        None, description="Sentinels as comma-separated host:port (unset: no Sentinel)."
    )
    redis_sentinel_master: str = "mymaster"
    # The sentinels' own password, when they require one (often none, or the master's).
    redis_sentinel_password: SecretStr | None = None
    # A 202 (and a job's status change) only once this many replicas hold the write
    # (Redis WAIT, up to REDIS_ACK_TIMEOUT_S); 0: acknowledged by the master alone.
    redis_min_replicas_ack: int = Field(0, ge=0, le=16)
    redis_ack_timeout_s: float = Field(1.0, gt=0, le=4)
    registry_path: Path = Field(
        Path("model_config.yaml"),
        validation_alias=AliasChoices("MODEL_CONFIG", "registry_path"),
        description="Path of the model registry (model_config.yaml).",
    )
    # The seed's overrides: unset means "whatever model_config.yaml says".
    primary_model: str | None = None
    enable_fallback: bool | None = None
    # Models whose workers come on demand in this deployment (KEDA from zero), comma
    # separated: marked `autoscaled` on top of the registry (README, Several models).
    autoscaled_models: str = ""
    hf_cache_dir: Path | None = None
    openai_api_key: SecretStr | None = None
    # Prompt optimisation: any server speaking OpenAI's chat completions API.
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout_s: float = Field(15.0, gt=0, le=120)

    storage_url: str = "file://./data/images"
    s3_endpoint_url: str | None = None
    # Where clients reach the object store, when that differs from where the
    # services do (docker compose: http://s3:8333 inside, localhost:8333 outside).
    s3_public_endpoint_url: str | None = None
    presign_expiry_s: int = Field(3600, ge=60, le=7 * 24 * 3600)
    public_base_url: str = "http://127.0.0.1:8000"
    # A storage failure does not fail a generated job: its images wait in the
    # worker's spool (local disk) and are retried for STORAGE_RETRY_S (0: fail at
    # once), backing off up to STORAGE_RETRY_MAX_DELAY_S; a worker whose spool
    # holds STORAGE_SPOOL_BYTES takes no new job until it drains (worker/storing.py).
    # Capped well below the broker's 2 h visibility timeout.
    storage_retry_s: float = Field(DEFAULT_STORAGE_RETRY_S, ge=0, le=3600)
    storage_retry_max_delay_s: float = Field(DEFAULT_STORAGE_RETRY_MAX_DELAY_S, gt=0, le=300)
    # Each worker spools under <dir>/<its name>/; unset: <system temp dir>/darkroom-spool.
    storage_spool_dir: Path | None = None
    storage_spool_bytes: int = Field(DEFAULT_STORAGE_SPOOL_BYTES, ge=0)

    # Webhooks. WEBHOOK_SECRET holds one or more whsec_ secrets, space or
    # comma separated; every one signs (key rotation: add the new, drop the old).
    webhook_secret: SecretStr | None = None
    webhook_allow_private_networks: bool = False
    # The whole of one attempt (resolving, connecting, sending, reading the
    # answer), not each read: a receiver that trickles its answer byte by byte
    # must not hold a delivery thread past it.
    webhook_timeout_s: float = Field(10.0, gt=0, le=60)
    # Deliveries of one API key (the job's owner) running at once, across every
    # webhook worker; more wait their turn without holding a thread. 0: no limit.
    webhook_max_per_key: int = Field(4, ge=0, le=1000)
    # Delay before each retry; the default adds up to about a day (Svix's schedule).
    webhook_retry_delays_s: list[float] = [5, 300, 1800, 7200, 18000, 36000, 36000]
    webhook_max_response_bytes: int = Field(64 * 1024, ge=0)

    job_ttl_s: int = Field(DEFAULT_JOB_TTL_S, ge=60)
    max_request_bytes: int = Field(20 * 1024 * 1024, ge=1024)

    # Security (README "Security"). Any key configured turns authentication on.
    # API_KEYS: plain keys, comma separated; API_KEYS_FILE: one SHA-256 hex
    # digest of a key per line, so the server need not hold the keys themselves,
    # each optionally followed by the key's settings (shared.keypolicy).
    api_keys: SecretStr | None = None
    api_keys_file: Path | None = None
    # Per API key, shared by every API process (counted in Redis); 0 turns one off.
    rate_limit_submits_per_minute: int = Field(120, ge=0)
    rate_limit_max_queued: int = Field(100, ge=0, description="Jobs queued or running per key.")

    @field_validator("api_keys")
    @classmethod
    def _plain_api_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for key in split_api_keys(value.get_secret_value()):
                check_plain_key(key)
        return value

    @field_validator("metrics_token")
    @classmethod
    def _metrics_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None  # METRICS_TOKEN= (empty) leaves /metrics open, as unset does
        try:
            check_plain_key(value.get_secret_value())
        except ValueError as exc:
            raise ValueError(str(exc).replace("API_KEYS entries", "METRICS_TOKEN")) from None
        return value

    @field_validator("api_keys_file")
    @classmethod
    def _api_keys_file(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_key_file(value)  # refuse a missing, empty or malformed file at start
        return value

    @property
    def api_key_policies(self) -> dict[str, KeyPolicy]:
        """Every accepted API key's SHA-256 hex digest and what it may do: API_KEYS
        with the defaults, then API_KEYS_FILE (whose settings win for a key in both)."""
        plain = split_api_keys(self.api_keys.get_secret_value()) if self.api_keys else []
        policies = {hash_key(key): DEFAULT_POLICY for key in plain}
        if self.api_keys_file is not None:
            policies.update(read_key_file(self.api_keys_file))
        return policies

    @property
    def api_key_digests(self) -> frozenset[str]:
        """SHA-256 hex digests of every accepted API key (API_KEYS hashed, and API_KEYS_FILE)."""
        return frozenset(self.api_key_policies)

    # Fair shares across API keys (docs/scheduling.md): a key's usage halves every
    # FAIR_SHARE_HALF_LIFE_S; the API and every worker must agree on it.
    fair_share_half_life_s: float = Field(DEFAULT_FAIR_SHARE_HALF_LIFE_S, ge=1, le=7 * 24 * 3600)
    # LoRA adapters a key brings (POST /loras): the largest file, and how many a key
    # may keep.
    lora_max_bytes: int = Field(512 * 1024 * 1024, ge=1024, le=8 * 1024**3)
    lora_max_per_key: int = Field(50, ge=0, le=10_000)
    # Workers holding several models (docs/scheduling.md, "Models"): how much longer
    # a job that needs a swap may wait than one that does not.
    model_swap_after_s: float = Field(DEFAULT_SWAP_AFTER_S, ge=0, le=3600)

    # Reliability. A worker whose heartbeat is older than WORKER_TTL_S is dead;
    # its running job goes back to the queue, and fails after JOB_MAX_ATTEMPTS.
    worker_ttl_s: float = Field(15.0, ge=1, le=300)
    job_max_attempts: int = Field(3, ge=1, le=20)
    # Default time limits per job; a registry entry may set its own.
    job_soft_time_limit_s: float = Field(600.0, gt=0)
    job_time_limit_s: float = Field(900.0, gt=0, le=3600)

    # Worker-side knobs.
    worker_model: str | None = Field(
        None, description="Pin this worker to one registry model (darkroom worker --model)."
    )
    # The models this worker serves (darkroom worker --models a,b or '*'); the first
    # loads at start, the others when a job needs them. Unset: WORKER_MODEL, else
    # the primary model (with the fallback chain), as one model.
    worker_models: str | None = None
    # The resident set's budget on the device (unset: what it has, less 10 %) and
    # the warm tier's in pinned host memory (0: none); bytes or 24GiB, 512MB.
    worker_device_memory: str | None = None
    worker_host_memory: str = "0"
    device: Literal["auto", "cuda", "cpu"] = "auto"
    torch_threads: int | None = Field(None, ge=1)
    # process: the model lives in an engine process of the worker's own, so the
    # next job is prepared and the last one recorded while the device computes
    # (worker/engine.py); inline: everything in the Celery process.
    worker_engine: Literal["process", "inline"] = "process"
    # Live previews (README, "Live previews"): made from the latents while someone
    # watches a job, at most every PREVIEW_INTERVAL_S; PREVIEWS=off makes none.
    previews: bool = True
    preview_interval_s: float = Field(0.5, ge=0.05, le=60)
    # Each stored PNG carries its generation parameters (docs/compat.md, PNG metadata):
    # A1111's `parameters` text chunk and darkroom's own; PNG_METADATA=off writes none.
    png_metadata: bool = True

    log_level: str = "INFO"
    # json: one JSON object a line (time, level, logger, message, job_id, model,
    # worker), for log pipelines (Loki, Elasticsearch, CloudWatch) that parse it.
    log_format: Literal["text", "json"] = "text"

    # Observability. GET /metrics on the API (open, like /healthz, unless
    # METRICS_TOKEN is set: it holds counts, never a job id, prompt or key); each
    # worker serves its own on WORKER_METRICS_PORT (unset: none).
    metrics_enabled: bool = True
    # Set: GET /metrics of the API answers only `Authorization: Bearer <token>`
    # (the scrape configs in deploy/observability send it from a file).
    metrics_token: SecretStr | None = None

    # The OpenAI (/v1) and AUTOMATIC1111 (/sdapi/v1) compatible APIs answer with
    # the finished images, waiting for the job (without holding a thread) up to
    # this long; then an error that names the job id, which keeps running.
    compat_wait_s: float = Field(300.0, gt=0, le=3600)
    # A1111's Extras (/sdapi/v1/extra-*) resize on the API's CPU: the most pixels an
    # image may come out with (16 megapixels, 4096 x 4096).
    extras_max_pixels: int = Field(16 * 1024 * 1024, ge=1, le=256 * 1024 * 1024)
    worker_metrics_port: int | None = Field(None, ge=1, le=65535)

    @field_validator("worker_device_memory", "worker_host_memory")
    @classmethod
    def _sizes(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            parse_size(value)
        return value or None

    @property
    def device_memory_bytes(self) -> int | None:
        return parse_size(self.worker_device_memory) if self.worker_device_memory else None

    @property
    def host_memory_bytes(self) -> int:
        return parse_size(self.worker_host_memory) if self.worker_host_memory else 0

    def served_models(self, known: list[str]) -> list[str] | None:
        """The models this worker serves, in order (None: the primary with its fallback
        chain, as one model); ValueError naming an unknown one."""
        if self.worker_models:
            asked = [m.strip() for m in self.worker_models.split(",") if m.strip()]
            if asked == ["*"]:
                return list(known)
            unknown = [m for m in asked if m not in known]
            if unknown:
                raise ValueError(
                    f"WORKER_MODELS: unknown model(s) {', '.join(unknown)}; "
                    f"the registry has {', '.join(known)}"
                )
            return asked
        return [self.worker_model] if self.worker_model else None

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if urlparse(value).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError("REDIS_URL must start with redis://, rediss:// or unix://")
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        if value is not None:
            parse_addresses(value)
        return value

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The sentinels' (host, port); empty without Sentinel."""
        return parse_addresses(self.redis_sentinels) if self.redis_sentinels else []

    @field_validator("storage_url")
    @classmethod
    def _storage_scheme(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme not in {"file", "s3"}:
            raise ValueError("STORAGE_URL must be file:///path or s3://bucket/prefix")
        if parsed.scheme == "s3" and not parsed.netloc:
            raise ValueError("STORAGE_URL s3:// needs a bucket name: s3://bucket/prefix")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secrets(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for secret in split_secrets(value.get_secret_value()):
                if not secret.startswith("whsec_"):
                    raise ValueError("WEBHOOK_SECRET entries must look like whsec_<base64>")
        return value

    @property
    def webhook_secrets(self) -> list[str]:
        if self.webhook_secret is None:
            return []
        return split_secrets(self.webhook_secret.get_secret_value())

    @field_validator("public_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")


def parse_addresses(value: str) -> list[tuple[str, int]]:
    """`host:port,host:port` as (host, port) pairs; ValueError naming a bad one."""
    addresses = []
    for part in value.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"REDIS_SENTINELS: {part.strip()!r} is not host:port")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def split_secrets(value: str) -> list[str]:
    return [part for part in value.replace(",", " ").split() if part]


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once. Tests call `get_settings.cache_clear()`."""
    return Settings()
