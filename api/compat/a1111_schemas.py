"""AUTOMATIC1111's /sdapi/v1 as darkroom sees it: requests, answers, and their translation.

Unknown fields are ignored, as A1111's own (pydantic) models ignore them; the
A1111 fields darkroom has no counterpart for (styles, scripts, face
restoration, ...: docs/compat.md lists them) are ignored too, and named in the
answer when set (api.compat.a1111_fields). The answer's `parameters` echoes the
request back, as A1111 does.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.compat.a1111_models import CHECKPOINT_FIELD, Checkpoint
from api.compat.jobs import split_images
from shared.infotext import infotext
from shared.jobs import JobRecord
from shared.loras import ResolvedLora

# batch_size x n_iter above this is refused (422): a call is at most this many
# images, in jobs of MAX_IMAGES_PER_JOB, each queued and rate-limited on its own.
# batch_size and n_iter go as high as A1111's own page lets them (8 and 100).
MAX_IMAGES_PER_CALL = 64
MAX_BATCH_SIZE = 8
MAX_N_ITER = 100
# darkroom's field names as A1111's clients know them, for the errors.
A1111_NAMES = {
    "guidance_scale": "cfg_scale",
    "num_images": "batch_size",
    "init_image": "init_images",
    "mask_image": "mask",
    "strength": "denoising_strength",
    "sampler": "sampler_name",
    "model": f"override_settings.{CHECKPOINT_FIELD}",
    "hires": "hr_scale",
    "hires.upscaler": "hr_upscaler",
    "hires.steps": "hr_second_pass_steps",
}


class Txt2ImgRequest(BaseModel):
    """Body of POST /sdapi/v1/txt2img: the fields darkroom uses (any other is echoed only).

    Unset steps, cfg_scale, width and height take the model's defaults (A1111's
    own defaults, 50 steps at 512x512, suit few of darkroom's models).
    """

    model_config = ConfigDict(extra="allow")

    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    batch_size: int = Field(1, ge=1, le=MAX_BATCH_SIZE)
    n_iter: int = Field(1, ge=1, le=MAX_N_ITER)
    sampler_name: str | None = None
    sampler_index: str | None = None
    scheduler: str | None = None
    override_settings: dict[str, Any] | None = None
    send_images: bool = True
    tiling: bool | None = None
    # Hires fix (txt2img): A1111's defaults; 0 is "unset" for steps and sizes.
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    denoising_strength: float | None = None

    @property
    def image_count(self) -> int:
        return self.batch_size * self.n_iter


class Img2ImgRequest(Txt2ImgRequest):
    """Body of POST /sdapi/v1/img2img: txt2img's fields, the image, strength and mask."""

    init_images: list[str] | None = None
    denoising_strength: float = 0.75
    mask: str | None = None
    inpainting_mask_invert: int = 0
    include_init_images: bool = False


class ImagesAnswer(BaseModel):
    images: list[str]
    parameters: dict[str, Any]
    info: str  # a JSON document, as text (A1111's processed.js())


class SDModelItem(BaseModel):
    title: str
    model_name: str
    hash: str
    sha256: str
    filename: str
    config: str | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class ProgressAnswer(BaseModel):
    progress: float
    eta_relative: float
    state: dict[str, Any]
    current_image: str | None = None
    textinfo: str | None = None


def job_fields(
    request: Txt2ImgRequest, model: str | None, sampler: str | None
) -> list[dict[str, Any]]:
    """The JobCreate fields of each job of the call: batch_size x n_iter images, split
    into jobs of at most MAX_IMAGES_PER_JOB whose seeds follow on, so that the
    images' seeds are A1111's `seed, seed + 1, ...`."""
    common = {
        "prompt": request.prompt,
        # A1111's clients send "" for "none given": the model's own negative prompt.
        "negative_prompt": request.negative_prompt or None,
        "model": model,
        "width": _multiple_of_8(request.width),
        "height": _multiple_of_8(request.height),
        "steps": request.steps,
        "guidance_scale": request.cfg_scale,
        "sampler": sampler,
    }
    seed = request.seed if request.seed != -1 else None
    return [
        {**common, "seed": job_seed, "num_images": images}
        for job_seed, images in split_images(request.image_count, seed)
    ]


def _multiple_of_8(size: int | None) -> int | None:
    """A1111 rounds a size down to a multiple of 8 (the latents' grid); darkroom's
    own API refuses one that is not. Below 8 stays as sent: the core refuses it."""
    if size is None or size < 8:
        return size
    return size - size % 8


def parameters(request: Txt2ImgRequest) -> dict[str, Any]:
    """The request as A1111 echoes it: every field sent, the input images left out."""
    echoed = request.model_dump()
    if isinstance(request, Img2ImgRequest) and not request.include_init_images:
        echoed.update(init_images=None, mask=None)
    return echoed


def info(
    request: Txt2ImgRequest,
    records: list[JobRecord],
    checkpoint: Checkpoint,
    sampler: str,
    ignored: list[str] | None = None,
) -> str:
    """A1111's `info`: the generation's parameters as a JSON string (what webuiapi parses)."""
    first = records[0].params
    seeds = [r.params.seed + i for r in records for i in range(r.params.num_images)]
    negative = first.negative_prompt or ""
    document = {
        "prompt": first.prompt,
        "all_prompts": [first.prompt] * len(seeds),
        "negative_prompt": negative,
        "all_negative_prompts": [negative] * len(seeds),
        "seed": seeds[0],
        "all_seeds": seeds,
        "subseed": seeds[0],
        "all_subseeds": seeds,
        "subseed_strength": 0,
        "width": first.width,
        "height": first.height,
        "sampler_name": sampler,
        "cfg_scale": first.guidance_scale,
        "steps": first.steps,
        "batch_size": request.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": checkpoint.name,
        "sd_model_hash": checkpoint.short_hash,
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": first.strength or 0,
        "extra_generation_params": _lora_hashes(first.loras),
        "index_of_first_image": 0,
        "infotexts": [
            infotext(first, seed, sampler, checkpoint.name, checkpoint.short_hash) for seed in seeds
        ],
        "styles": [],
        "job_timestamp": records[0].created_at.strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": first.mode == "inpaint",
        "version": "darkroom",
        # darkroom's own: the jobs that made the images (GET /jobs/{id}).
        "job_ids": [record.id for record in records],
        # <lora:...> tags left out (an adapter unknown to this key, or for another base).
        "darkroom_ignored": ignored or [],
    }
    return json.dumps(document)


def _lora_hashes(loras: list[ResolvedLora]) -> dict[str, str]:
    """A1111's record of the adapters applied: `name: <first 12 of its sha256>`."""
    if not loras:
        return {}
    return {"Lora hashes": ", ".join(f"{x.name}: {(x.sha256 or '')[:12]}" for x in loras)}
