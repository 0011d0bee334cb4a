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

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis for job records, worker records and the Celery broker: "
        "`redis://`, `rediss://` or `unix://` (with `REDIS_SENTINELS`, only its database, "
        "password and TLS are used).",
    )
    # High availability: docs/high-availability.md. The sentinels are asked again after
    # a failover, so no part holds on to a dead master.
    redis_sentinels: str | None = Field(
        None,
        description="Sentinels as comma-separated `host:port`, asked where the master is "
        "(unset: no Sentinel).",
    )
    redis_sentinel_master: str = Field(
        "mymaster", description="The name under which the sentinels know the master."
    )
    redis_sentinel_password: SecretStr | None = Field(
        None,
        description="The sentinels' own password, when they require one (often none, "
        "or the master's).",
    )
    # Redis WAIT: a job answered 202 is then on a replica too, so a master's death
    # loses no accepted job.
    redis_min_replicas_ack: int = Field(
        0,
        ge=0,
        le=16,
        description="Replicas that must hold a job before its `202` (and a status change "
        "before darkroom goes on); `503` when fewer confirm in time (0: the master alone).",
    )
    redis_ack_timeout_s: float = Field(
        1.0,
        gt=0,
        le=4,
        description="Seconds to wait for `REDIS_MIN_REPLICAS_ACK` replicas to confirm a write.",
    )
    registry_path: Path = Field(
        Path("model_config.yaml"),
        validation_alias=AliasChoices("MODEL_CONFIG", "registry_path"),
        description="Path of the model registry file (docs/models.md).",
    )
    # The seed's overrides: unset means "whatever model_config.yaml says".
    primary_model: str | None = Field(
        None,
        description="The model workers load first (unset: the registry's `runtime.primary_model`).",
    )
    enable_fallback: bool | None = Field(
        None,
        description="Whether a worker tries `fallback_models` when the primary will not "
        "load (unset: the registry's `runtime.enable_fallback`).",
    )
    autoscaled_models: str = Field(
        "",
        description="Models whose workers come on demand here (KEDA from zero), comma "
        "separated: their jobs are accepted while no live worker may load them, as for "
        "the registry's `autoscaled: true`.",
    )
    hf_cache_dir: Path | None = Field(
        None, description="Hugging Face model cache directory (unset: Hugging Face's default)."
    )
    openai_api_key: SecretStr | None = Field(
        None,
        description="Key of the chat completions server used for prompt optimisation "
        "(`runtime.prompt_optimization` in the registry).",
    )
    openai_base_url: str | None = Field(
        None,
        description="Any server speaking OpenAI's chat completions API, for prompt "
        "optimisation (unset: OpenAI's).",
    )
    openai_model: str = Field("gpt-4o-mini", description="The chat model that rewrites prompts.")
    openai_timeout_s: float = Field(
        15.0,
        gt=0,
        le=120,
        description="Seconds one prompt optimisation call may take; then the prompt is used "
        "as given.",
    )

    storage_url: str = Field(
        "file://./data/images",
        description="Where images go: `file:///path` (served by the API at `/files/`) or "
        "`s3://bucket/prefix`.",
    )
    s3_endpoint_url: str | None = Field(
        None,
        description="Any S3-compatible endpoint (unset: AWS); credentials and region come "
        "from the standard `AWS_*` variables.",
    )
    # docker compose: the services reach http://s3:8333, clients localhost:8333.
    s3_public_endpoint_url: str | None = Field(
        None,
        description="The endpoint presigned image URLs are made for, when clients reach the "
        "store elsewhere than the services do (unset: `S3_ENDPOINT_URL`).",
    )
    presign_expiry_s: int = Field(
        3600,
        ge=60,
        le=7 * 24 * 3600,
        description="Seconds a presigned image URL stays valid.",
    )
    public_base_url: str = Field(
        "http://127.0.0.1:8000",
        description="How clients reach the API, for the job and file URLs it answers with.",
    )
    # A storage failure does not fail a generated job: its images wait in the worker's
    # spool (worker/storing.py). Capped well below the broker's 2 h visibility timeout.
    storage_retry_s: float = Field(
        DEFAULT_STORAGE_RETRY_S,
        ge=0,
        le=3600,
        description="Seconds a worker retries storing a generated job's images (the job "
        "stays `running`) before it fails with `storage_error` (0: fail at once).",
    )
    storage_retry_max_delay_s: float = Field(
        DEFAULT_STORAGE_RETRY_MAX_DELAY_S,
        gt=0,
        le=300,
        description="The longest pause between two storage tries, in seconds (doubling "
        "from 0.5 s, with jitter).",
    )
    storage_spool_dir: Path | None = Field(
        None,
        description="Where images wait for storage, in a directory per worker (unset: "
        "`<system temp dir>/darkroom-spool`).",
    )
    storage_spool_bytes: int = Field(
        DEFAULT_STORAGE_SPOOL_BYTES,
        ge=0,
        description="Bytes of waiting images at which a worker takes no new job until its "
        "spool drains (0: none while any image waits; 1 GiB is 500+ images of 1024x1024).",
    )

    # Several WEBHOOK_SECRET entries all sign: key rotation adds the new, drops the old.
    webhook_secret: SecretStr | None = Field(
        None,
        description="One or more `whsec_...` secrets, space or comma separated, each "
        "signing every webhook (unset: jobs with a webhook are refused).",
    )
    webhook_allow_private_networks: bool = Field(
        False,
        description="Allow webhook targets on loopback, private and other non-public "
        "addresses (local development).",
    )
    # The whole attempt, not each read: a receiver that trickles its answer byte by
    # byte must not hold a delivery thread past it.
    webhook_timeout_s: float = Field(
        10.0,
        gt=0,
        le=60,
        description="Seconds one whole delivery attempt may take: resolving, connecting, "
        "sending and reading the answer together.",
    )
    # Per key, so one tenant's slow receivers delay only that tenant's webhooks; the
    # others wait their turn without holding a thread.
    webhook_max_per_key: int = Field(
        4,
        ge=0,
        le=1000,
        description="Deliveries of one API key (the job's owner) running at once, across "
        "every webhook worker (0: no limit).",
    )
    # The default is Svix's schedule.
    webhook_retry_delays_s: list[float] = Field(
        [5, 300, 1800, 7200, 18000, 36000, 36000],
        description="Seconds before each retry of a failed delivery, a JSON list (the "
        "default adds up to about a day).",
    )
    webhook_max_response_bytes: int = Field(
        64 * 1024,
        ge=0,
        description="The most of a receiver's answer a delivery reads (and keeps in its "
        "log), in bytes.",
    )

    job_ttl_s: int = Field(
        DEFAULT_JOB_TTL_S,
        ge=60,
        description="Seconds after which job records, their inputs and local images "
        "expire (then `404`).",
    )
    max_request_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1024,
        description="Request bodies larger than this many bytes get `413` before they are read.",
    )

    # Security: docs/security.md. API_KEYS_FILE holds digests, so the server need not
    # hold the keys themselves.
    api_keys: SecretStr | None = Field(
        None,
        description="API keys, comma separated, at least 16 characters each; any key "
        "configured turns authentication on (unset, with no `API_KEYS_FILE`: open).",
    )
    api_keys_file: Path | None = Field(
        None,
        description="A file of SHA-256 hex digests of API keys, one per line, each "
        "optionally followed by the key's settings (`name=`, `priorities=`, `weight=`, "
        "`max_running=`, `max_queued=`, `admin=`); `#` starts a comment.",
    )
    # Counted in Redis, so every API process shares one allowance per key.
    rate_limit_submits_per_minute: int = Field(
        120,
        ge=0,
        description="Jobs accepted per API key in any sliding minute (0: no limit).",
    )
    rate_limit_max_queued: int = Field(
        100,
        ge=0,
        description="Jobs queued or running at once per API key (0: no limit).",
    )

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

    # Fair shares across API keys: docs/scheduling.md.
    fair_share_half_life_s: float = Field(
        DEFAULT_FAIR_SHARE_HALF_LIFE_S,
        ge=1,
        le=7 * 24 * 3600,
        description="Seconds in which a key's usage (the GPU-seconds it was given) halves: "
        "how long the past counts in whose turn it is; the API and every worker must agree.",
    )
    lora_max_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024,
        le=8 * 1024**3,
        description="The largest LoRA adapter file a key may bring (`POST /loras`), in bytes.",
    )
    lora_max_per_key: int = Field(
        50, ge=0, le=10_000, description="LoRA adapters of its own one key may keep."
    )
    model_swap_after_s: float = Field(
        DEFAULT_SWAP_AFTER_S,
        ge=0,
        le=3600,
        description="Seconds longer a job that needs its worker to swap models may wait "
        "than one that does not, before it goes first (docs/scheduling.md, Models).",
    )

    # Reliability: docs/reliability.md.
    worker_ttl_s: float = Field(
        15.0,
        ge=1,
        le=300,
        description="Seconds after its last heartbeat a worker counts as dead: its running "
        "job goes back to its queue.",
    )
    # Bounded, so a job that kills every worker it runs on does not loop for ever.
    job_max_attempts: int = Field(
        3,
        ge=1,
        le=20,
        description="Runs of a job handed back after its worker died, before the job fails "
        "as `worker_lost`.",
    )
    job_soft_time_limit_s: float = Field(
        600.0,
        gt=0,
        description="Seconds a job may run before it fails at its next step (a registry "
        "entry may set its own).",
    )
    job_time_limit_s: float = Field(
        900.0,
        gt=0,
        le=3600,
        description="Seconds after which a job that does not stop is ended where it is, "
        "with its worker (a registry entry may set its own).",
    )

    # Worker-side knobs.
    worker_model: str | None = Field(
        None,
        description="Pin a worker to one registry model (`darkroom worker --model`): the "
        "one-model form of `WORKER_MODELS`.",
    )
    worker_models: str | None = Field(
        None,
        description="The models a worker serves, comma separated, or `*` for all "
        "(`darkroom worker --models`); the first loads at start, the others when a job "
        "needs them (unset: `WORKER_MODEL`, else the primary with its fallback chain).",
    )
    worker_device_memory: str | None = Field(
        None,
        description="Bytes of model weights a worker keeps on its device, as bytes or "
        "`24GiB`, `8000MB` (unset: the device's memory less 10 %; host memory on a CPU).",
    )
    worker_host_memory: str = Field(
        "0",
        description="Bytes of pinned host memory for models moved off the device, the warm "
        "tier (0: none; a model that leaves the device is dropped).",
    )
    device: Literal["auto", "cuda", "cpu"] = Field(
        "auto", description="Where a worker computes: `auto` (CUDA if present), `cuda` or `cpu`."
    )
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads per worker (unset: torch's default)."
    )
    # process keeps the device busy: the next job is prepared and the last one recorded
    # while the device computes (worker/engine.py).
    worker_engine: Literal["process", "inline"] = Field(
        "process",
        description="`process`: the model lives in an engine process of the worker's own; "
        "`inline`: everything in the Celery process.",
    )
    # Made from the latents only while someone watches a job: nobody watching costs nothing.
    previews: bool = Field(
        True, description="Live previews of watched jobs (`off`: none at all; docs/api.md)."
    )
    preview_interval_s: float = Field(
        0.5,
        ge=0.05,
        le=60,
        description="The shortest time between two previews of a watched job, in seconds.",
    )
    png_metadata: bool = Field(
        True,
        description="Stored PNGs carry their generation parameters (A1111's `parameters` "
        "text chunk and darkroom's own; docs/compat.md, PNG metadata); `off`: none.",
    )

    log_level: str = Field("INFO", description="The logging level (`DEBUG`, `INFO`, ...).")
    # json is for log pipelines (Loki, Elasticsearch, CloudWatch) that parse it.
    log_format: Literal["text", "json"] = Field(
        "text",
        description="`text`, or `json`: one JSON object a line with the job id, model and "
        "worker where known.",
    )

    # Observability: docs/observability.md. /metrics holds counts, never a job id,
    # prompt or key, so it may be as open as /healthz unless a token is set.
    metrics_enabled: bool = Field(
        True, description="Serve Prometheus metrics at the API's `GET /metrics`."
    )
    # The scrape configs in deploy/observability send the token from a file.
    metrics_token: SecretStr | None = Field(
        None,
        description="When set, the API's `/metrics` answers only `Authorization: Bearer "
        "<token>` (16+ characters; unset or empty: open).",
    )

    # The wait holds no thread; the job keeps running after it.
    compat_wait_s: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="Seconds the OpenAI (`/v1`) and AUTOMATIC1111 (`/sdapi/v1`) calls wait "
        "for their job; then an error naming the job, which keeps running.",
    )
    # A1111's Extras resize on the API's CPU: the cap keeps one call from taking it.
    extras_max_pixels: int = Field(
        16 * 1024 * 1024,
        ge=1,
        le=256 * 1024 * 1024,
        description="The most pixels an image may come out of A1111's Extras "
        "(`/sdapi/v1/extra-*`) with; a batch's images together at most four times it.",
    )
    worker_metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port of a worker's (or a `--gpus` pool's, or the webhook worker's) "
        "`/metrics` (unset: none).",
    )

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
