"""What the Generate form may ask for, and the `POST /jobs` bodies the page sends.

Pure functions of what `GET /models` and `GET /jobs` return: the page lays
them out, a test calls them directly.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

# JobCreate's own bounds (the API refuses anything outside them).
MIN_SIZE = 8
MAX_IMAGES = 4
MAX_GUIDANCE = 50.0
MAX_SEED = 2**32 - 1
# A slider up to 50 is too coarse to set 7.5 with; 20 covers what models use,
# and a model whose default lies above it widens the range.
USUAL_MAX_GUIDANCE = 20.0
# diffusers' image-to-image default, which the API applies when none is sent.
DEFAULT_STRENGTH = 0.75
# What a job gets when it asks for none (where the key may use it).
DEFAULT_PRIORITY = "normal"
# The sampler select's entry for "send none": the pipeline's own scheduler, for a
# model whose registry entry names no default_sampler.
MODEL_DEFAULT_SAMPLER = "model default"
# The schedule select's "send none": the sampler's own sigma schedule (A1111's label).
AUTOMATIC_SCHEDULE = "Automatic"
# The hires fix as POST /jobs takes it (docs/api.md, `hires`); GET /models does not list
# the upscalers. Latent ones upscale the latents, which only SD and SDXL keep
# unpacked: the API refuses them for other types.
LATENT_UPSCALERS = (
    "Latent",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Latent (nearest)",
    "Latent (nearest-exact)",
)
LATENT_TYPES = frozenset({"sd", "sdxl"})
# A1111's third, "None", is a Lanczos resize as well: one name for it is enough.
IMAGE_UPSCALERS = ("Lanczos", "Nearest")
DEFAULT_HIRES_SCALE = 2.0
MAX_HIRES_SCALE = 4.0
# A1111's "Denoising strength" default for the second pass, as the API's.
DEFAULT_HIRES_STRENGTH = 0.7


@dataclass(frozen=True)
class ModelLimits:
    """One model of `GET /models`: its defaults and the limits the API enforces."""

    name: str
    description: str
    default_steps: int
    max_steps: int
    default_size: tuple[int, int]
    max_size: tuple[int, int]
    guidance_scale: float
    supports_i2i: bool
    use_negative_prompt: bool
    negative_prompt: str
    workers: int
    # Its type: the LoRA adapters it takes are those made for it.
    type: str = ""
    max_loras: int = 0
    # GET /models' flags (docs/models.md, "Several models per worker"); an older API sends
    # none of them: a model a worker runs is resident, any other is servable.
    servable: bool = True
    loadable: bool = False
    resident: bool = False
    # Samplers and sigma schedules by their A1111 names; an older API lists none
    # (and the page then offers no choice: the model's own is used).
    samplers: tuple[str, ...] = ()
    schedulers: tuple[str, ...] = ()
    default_sampler: str | None = None
    supports_inpainting: bool = False

    @classmethod
    def from_api(cls, name: str, info: dict[str, Any]) -> ModelLimits:
        default_w, default_h = info["default_size"]
        max_w, max_h = info["max_size"]
        return cls(
            name=name,
            description=info.get("description") or "",
            default_steps=int(info["default_steps"]),
            max_steps=int(info["max_steps"]),
            default_size=(int(default_w), int(default_h)),
            max_size=(int(max_w), int(max_h)),
            guidance_scale=float(info["guidance_scale"]),
            supports_i2i=bool(info["supports_i2i"]),
            use_negative_prompt=bool(info.get("use_negative_prompt", True)),
            negative_prompt=info.get("negative_prompt") or "",
            workers=int(info.get("workers", 0)),
            type=str(info.get("type", "")),
            max_loras=int(info.get("max_loras", 0)),
            servable=bool(info.get("servable", True)),
            loadable=bool(info.get("loadable", info.get("workers", 0))),
            resident=bool(info.get("resident", info.get("workers", 0))),
            samplers=tuple(str(name) for name in info.get("samplers") or ()),
            schedulers=tuple(str(label) for label in info.get("schedulers") or ()),
            default_sampler=info.get("default_sampler") or None,
            supports_inpainting=bool(info.get("supports_inpainting", False)),
        )

    @property
    def max_guidance(self) -> float:
        return min(MAX_GUIDANCE, max(USUAL_MAX_GUIDANCE, self.guidance_scale))

    def summary(self) -> str:
        """One line of what the model allows, under its description in the sidebar."""
        max_w, max_h = self.max_size
        parts = [f"up to {max_w}x{max_h}", f"at most {self.max_steps} steps"]
        if self.supports_inpainting:
            parts.append("image-to-image and inpainting")
        else:
            parts.append("image-to-image" if self.supports_i2i else "text-to-image only")
        if self.resident:
            parts.append("loaded on a worker now")
        elif self.loadable:
            parts.append("a worker loads it for its next job (that job waits for the load)")
        elif self.servable:
            parts.append("no worker serves it now: jobs wait until one starts")
        else:
            parts.append("no live worker may load it: jobs for it are refused")
        return "; ".join(parts)


def sampler_options(model: ModelLimits) -> list[str]:
    """The sampler select's entries, the one it starts at first: the model's default
    sampler, else MODEL_DEFAULT_SAMPLER (none sent). Empty: the API lists none."""
    if not model.samplers:
        return []
    rest = [name for name in model.samplers if name != model.default_sampler]
    # A registry default may be an alias or an older name ("DPM++ 2M SDE Karras"
    # spelled otherwise) that the list does not hold as such: it leads all the same.
    return [model.default_sampler or MODEL_DEFAULT_SAMPLER, *rest]


def schedule_options(model: ModelLimits) -> list[str]:
    """The schedule select's entries, AUTOMATIC_SCHEDULE (none sent) first. Empty: the
    API lists none."""
    if not model.schedulers:
        return []
    return [AUTOMATIC_SCHEDULE, *(s for s in model.schedulers if s != AUTOMATIC_SCHEDULE)]


def models_from_api(answer: dict[str, Any]) -> dict[str, ModelLimits]:
    return {name: ModelLimits.from_api(name, info) for name, info in answer["models"].items()}


def offered(models: dict[str, ModelLimits]) -> list[str]:
    """The models the page offers: those whose jobs the API accepts now (all of them,
    if it says none is)."""
    return sorted(n for n, m in models.items() if m.servable) or sorted(models)


def default_model(answer: dict[str, Any]) -> str:
    """The model the API would pick: the one most workers serve, else the primary."""
    return str(answer.get("current") or answer["primary"])


@dataclass(frozen=True)
class HiresValues:
    """The hires fix's fields: upscale by `scale`, then a second pass at `strength`."""

    scale: float
    strength: float
    upscaler: str
    steps: int | None = None  # None: as many as the first pass

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "scale": self.scale,
            "strength": self.strength,
            "upscaler": self.upscaler,
        }
        if self.steps is not None:
            body["steps"] = self.steps
        return body


def upscalers_for(model: ModelLimits) -> list[str]:
    """The hires upscalers the model takes, its default first."""
    latent = list(LATENT_UPSCALERS) if model.type in LATENT_TYPES else []
    return [*latent, *IMAGE_UPSCALERS]


@dataclass(frozen=True)
class FormValues:
    """What a person filled in; None leaves a field to the model's default."""

    prompt: str
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None
    seed: int | None = None
    num_images: int = 1
    priority: str = DEFAULT_PRIORITY
    init_image: bytes | None = None
    strength: float | None = None
    # PNG at the init image's size, white where to repaint: inpainting.
    mask_image: bytes | None = None
    # A1111 names; None: the model's own (nothing sent).
    sampler: str | None = None
    scheduler: str | None = None
    # None: no hires fix.
    hires: HiresValues | None = None
    tiling: bool = False
    # LoRA adapters picked, with their scales.
    loras: tuple[tuple[str, float], ...] = ()


def adapters_for(model: ModelLimits, loras: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The adapters (GET /loras) the model takes: those made for its type."""
    return [lora for lora in loras if lora.get("base") == model.type]


def default_priority_index(priorities: tuple[str, ...]) -> int:
    """Where the priority select starts: `normal` where offered, else the first offered."""
    return priorities.index(DEFAULT_PRIORITY) if DEFAULT_PRIORITY in priorities else 0


def request_body(model: ModelLimits, values: FormValues) -> dict[str, Any]:
    """The POST /jobs body for the form's values on `model`.

    A model that uses no negative prompt refuses one, strength and a mask mean
    something only with an init image (a mask, on a model that inpaints), and the
    hires fix only without one (on a model that does image-to-image, which its
    second pass is): those are left out rather than refused.
    """
    body: dict[str, Any] = {
        "prompt": values.prompt,
        "model": model.name,
        "num_images": values.num_images,
        "priority": values.priority,
    }
    for field in ("width", "height", "steps", "guidance_scale", "seed", "sampler", "scheduler"):
        value = getattr(values, field)
        if value is not None:
            body[field] = value
    if model.use_negative_prompt and values.negative_prompt is not None:
        body["negative_prompt"] = values.negative_prompt
    if model.supports_i2i and values.init_image is not None:
        body["init_image"] = base64.b64encode(values.init_image).decode()
        body["strength"] = values.strength if values.strength is not None else DEFAULT_STRENGTH
        if model.supports_inpainting and values.mask_image is not None:
            body["mask_image"] = base64.b64encode(values.mask_image).decode()
    elif model.supports_i2i and values.hires is not None:
        body["hires"] = values.hires.body()
    if values.tiling:
        body["tiling"] = True
    if values.loras:
        body["loras"] = [{"name": name, "scale": scale} for name, scale in values.loras]
    return body


def rerun_body(job: dict[str, Any]) -> dict[str, Any] | None:
    """The body that runs `job` again with the same parameters and seed (the same image).

    None for image-to-image and inpainting jobs: the API keeps no input image.
    """
    params = job["params"]
    if params.get("mode", "txt2img") != "txt2img":
        return None
    body: dict[str, Any] = {
        "model": job["model"],
        "priority": job.get("priority", "normal"),
        **{
            field: params[field]
            for field in ("prompt", "width", "height", "steps", "guidance_scale", "seed")
        },
        "num_images": params["num_images"],
    }
    # None: the model uses no negative prompt (sending one would be refused).
    if params.get("negative_prompt") is not None:
        body["negative_prompt"] = params["negative_prompt"]
    if params.get("loras"):
        body["loras"] = [{"name": x["name"], "scale": x["scale"]} for x in params["loras"]]
    # The resolved sampler and schedule (its A1111 id, which POST /jobs takes too).
    for field in ("sampler", "scheduler"):
        if params.get(field) is not None:
            body[field] = params[field]
    hires = params.get("hires")
    if hires:
        # The resolved plan: the final size itself, not the scale that gave it.
        fields = ("width", "height", "steps", "strength", "upscaler")
        body["hires"] = {field: hires[field] for field in fields}
    if params.get("tiling"):
        body["tiling"] = True
    return body
