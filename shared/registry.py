"""The model registry: `model_config.yaml` parsed into validated pydantic models.

The file is data. Unknown keys and bad values fail at start with the file, the
key and the reason; adding a model of a known type is a YAML edit only.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.errors import ConfigError
from shared.loras import LORA_BASES, NAME_PATTERN, LoraEntry
from shared.samplers import find_sampler, sampler_names
from shared.settings import Settings, get_settings

# Pipeline types darkroom knows how to load without a `pipeline_class`.
KNOWN_TYPES = ("sd", "sdxl", "sd3", "flux", "auto")

Size = tuple[int, int]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelParams(_Strict):
    default_steps: int = Field(30, ge=1)
    max_steps: int = Field(50, ge=1, le=1000)
    use_negative_prompt: bool = True
    guidance_scale: float = Field(7.5, ge=0, le=50)
    supports_i2i: bool = True
    # Inpainting (init_image + mask_image): the inpainting pipeline of the
    # model's type, made from the loaded weights (no second copy).
    supports_inpainting: bool = False
    # The sampler jobs get when they name none (an AUTOMATIC1111 name, see
    # GET /samplers); unset: the scheduler the model ships with.
    default_sampler: str | None = None
    max_tokens: int = Field(77, ge=1)
    default_size: Size = (1024, 1024)
    max_size: Size = (1024, 1024)
    negative_prompt: str = ""
    # The scheduler's estimate of a job's cost (docs/scheduling.md): GPU-seconds per
    # step per megapixel per image on the reference GPU. Only ratios between models
    # matter for fair shares (an SDXL step costs more than an SD 1.5 one); ETAs use
    # the measured speed once workers have run the model.
    cost_factor: float = Field(0.05, gt=0, le=100)
    # LoRA adapters a job may ask for at once (0: none).
    max_loras: int = Field(4, ge=0, le=16)

    @model_validator(mode="after")
    def _consistent(self) -> ModelParams:
        if self.default_steps > self.max_steps:
            raise ValueError(f"default_steps {self.default_steps} > max_steps {self.max_steps}")
        for name in ("default_size", "max_size"):
            width, height = getattr(self, name)
            if width <= 0 or height <= 0 or width % 8 or height % 8:
                raise ValueError(f"{name} must be positive multiples of 8, got {width}x{height}")
        if any(d > m for d, m in zip(self.default_size, self.max_size, strict=True)):
            raise ValueError(f"default_size {self.default_size} exceeds max_size {self.max_size}")
        return self


class ModelEntry(_Strict):
    id: str = Field(description="Hugging Face hub id, or a local directory (./ or / prefix).")
    type: str
    requires_auth: bool = False
    params: ModelParams = ModelParams()
    description: str = ""
    # Custom pipelines with no code change: "package.module:Class".
    pipeline_class: str | None = None
    img2img_pipeline_class: str | None = None
    inpaint_pipeline_class: str | None = None
    variant: str | None = Field(None, description="Weights variant to load, e.g. fp16.")
    torch_dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    # Per-job time limits on this model (default: JOB_SOFT_TIME_LIMIT_S and
    # JOB_TIME_LIMIT_S). Soft: the job fails at its next step. Hard: the worker
    # exits and the job is retried elsewhere; both stay below the broker's
    # visibility timeout (2 h).
    soft_time_limit_s: float | None = Field(None, gt=0, le=3600)
    time_limit_s: float | None = Field(None, gt=0, le=3600)
    # Dynamic batching (off at 1): a worker runs up to this many images of
    # compatible queued jobs (same mode, size, steps, guidance, strength) in one
    # pipeline call, waiting at most `batch_window` seconds for companions.
    max_batch_size: int = Field(1, ge=1, le=64)
    batch_window: float = Field(0.05, ge=0, le=10)
    # darkroom builds this model locally (random weights) when its directory is missing.
    builder: Literal["tiny-sd"] | None = None
    # Workers for it come on demand (KEDA from zero): its jobs are accepted even
    # while no live worker may load it. AUTOSCALED_MODELS marks models so per
    # deployment (deploy/k8s does for sdxl).
    autoscaled: bool = False
    # How live previews are made (worker/previews.py). Unset: a fixed linear
    # projection of its type's latents to RGB (no weights). A local directory: a
    # TAESD-family decoder (diffusers AutoencoderTiny: taesd, taesdxl, taesd3,
    # taef1) made for its latents; relative paths resolve against this file.
    # "vae": its own VAE (exact, at the cost of a full decode per preview).
    preview_decoder: str | None = None

    @model_validator(mode="after")
    def _known_type(self) -> ModelEntry:
        if self.pipeline_class is None and self.type not in KNOWN_TYPES:
            raise ValueError(
                f"type {self.type!r} is not one of {', '.join(KNOWN_TYPES)}; "
                "name a pipeline_class for custom types"
            )
        sampler = self.params.default_sampler
        if sampler is not None and find_sampler(sampler, self.type) is None:
            raise ValueError(
                f"default_sampler {sampler!r} is not a sampler of {self.type} models: "
                + ", ".join(sampler_names(self.type))
            )
        return self

    @property
    def is_local(self) -> bool:
        return self.id.startswith(("/", "./", "../"))

    @property
    def lora_base(self) -> str | None:
        """The adapters it takes: those made for its type (a custom pipeline takes none)."""
        return self.type if self.type in LORA_BASES and self.pipeline_class is None else None


class MemoryConfig(_Strict):
    enable_cpu_offload: bool = False
    enable_attention_slicing: bool = False
    enable_vae_slicing: bool = True
    use_8bit: bool = False


class PromptOptimization(_Strict):
    enabled: bool = False
    translate_korean: bool = True
    max_length_by_model: bool = True


class Runtime(_Strict):
    primary_model: str
    fallback_models: list[str] = []
    enable_fallback: bool = True
    memory: MemoryConfig = MemoryConfig()
    prompt_optimization: PromptOptimization = PromptOptimization()


class Registry(_Strict):
    models: dict[str, ModelEntry]
    runtime: Runtime
    # LoRA adapters by name (docs/models.md, "LoRA adapters").
    loras: dict[str, LoraEntry] = {}

    @field_validator("loras")
    @classmethod
    def _lora_names(cls, loras: dict[str, LoraEntry]) -> dict[str, LoraEntry]:
        for name in loras:
            if not re.fullmatch(NAME_PATTERN, name):
                raise ValueError(f"adapter name {name!r}: letters, digits, '.', '_', '-'")
        return loras

    @model_validator(mode="after")
    def _names_exist(self) -> Registry:
        named = [("runtime.primary_model", self.runtime.primary_model)]
        named += [
            (f"runtime.fallback_models.{i}", m) for i, m in enumerate(self.runtime.fallback_models)
        ]
        for key, name in named:
            if name not in self.models:
                raise ValueError(f"{key}: model {name!r} is not defined in models")
        return self

    @property
    def fallback_chain(self) -> list[str]:
        """Models tried after the primary, in order (empty when fallback is off)."""
        if not self.runtime.enable_fallback:
            return []
        return [m for m in self.runtime.fallback_models if m != self.runtime.primary_model]

    def load_order(self, pinned: str | None = None) -> list[str]:
        """Names a worker tries to load, first to last."""
        if pinned is not None:
            self.entry(pinned)
            return [pinned]
        return [self.runtime.primary_model, *self.fallback_chain]

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise ConfigError(
                f"unknown model {name!r}; the registry has: {', '.join(sorted(self.models))}"
            ) from None

    def with_overrides(
        self,
        primary_model: str | None = None,
        enable_fallback: bool | None = None,
        autoscaled: list[str] | None = None,
    ) -> Registry:
        """Apply environment overrides (PRIMARY_MODEL, ENABLE_FALLBACK,
        AUTOSCALED_MODELS) and re-validate."""
        registry = self._autoscaling(autoscaled) if autoscaled else self
        runtime: dict[str, object] = {}
        if primary_model is not None:
            if primary_model not in self.models:
                raise ConfigError(
                    f"PRIMARY_MODEL={primary_model!r} is not a model in the registry "
                    f"(known: {', '.join(sorted(self.models))})"
                )
            runtime["primary_model"] = primary_model
        if enable_fallback is not None:
            runtime["enable_fallback"] = enable_fallback
        if not runtime:
            return registry
        return registry.model_copy(update={"runtime": self.runtime.model_copy(update=runtime)})

    def _autoscaling(self, names: list[str]) -> Registry:
        unknown = [n for n in names if n not in self.models]
        if unknown:
            raise ConfigError(
                f"AUTOSCALED_MODELS: unknown model(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(self.models))})"
            )
        models = {
            name: entry.model_copy(update={"autoscaled": True}) if name in names else entry
            for name, entry in self.models.items()
        }
        return self.model_copy(update={"models": models})


def load_registry(path: Path) -> Registry:
    """Parse and validate a registry file; relative local model ids resolve against it."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: model registry file not found (set MODEL_CONFIG)") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with 'models' and 'runtime'")
    try:
        registry = Registry.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid model registry:\n{_describe(exc)}") from None
    return _resolve_local_ids(registry, path.resolve().parent)


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        lines.append(f"  {key}: {err['msg']}")
    return "\n".join(lines)


def _resolve_entry(entry: ModelEntry, base: Path) -> ModelEntry:
    update = {
        field: str((base / value).resolve())
        for field in ("id", "preview_decoder")
        if (value := getattr(entry, field)) is not None and value.startswith(("./", "../"))
    }
    return entry.model_copy(update=update) if update else entry


def _resolve_local_ids(registry: Registry, base: Path) -> Registry:
    models = {name: _resolve_entry(entry, base) for name, entry in registry.models.items()}
    loras = {
        name: entry.model_copy(update={"source": str((base / entry.source).resolve())})
        if entry.source.startswith(("./", "../"))
        else entry
        for name, entry in registry.loras.items()
    }
    return registry.model_copy(update={"models": models, "loras": loras})


def registry_for(settings: Settings) -> Registry:
    """The registry named by MODEL_CONFIG with the environment's overrides applied."""
    return load_registry(settings.registry_path).with_overrides(
        primary_model=settings.primary_model,
        enable_fallback=settings.enable_fallback,
        autoscaled=[m.strip() for m in settings.autoscaled_models.split(",") if m.strip()],
    )


@lru_cache
def get_registry() -> Registry:
    """The process's registry, loaded once from get_settings()."""
    return registry_for(get_settings())
