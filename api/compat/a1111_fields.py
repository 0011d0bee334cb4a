"""A1111's fields beyond the basics: the hires fix, tiling, the schedule, and what is left.

A1111 clients send many fields, most at neutral defaults (webuiapi sends all of
them). Those darkroom runs become the job's (`enable_hr` + `hr_*` its `hires`,
`tiling`, `scheduler`); each other known field set to something other than its
neutral value is ignored but never silently: it is named in the answer's
`info.darkroom_ignored` and its `Darkroom-Ignored` header, so a client (or
its user) can see that faces were not restored, or no script ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from api.compat.a1111_models import CHECKPOINT_FIELD
from api.compat.a1111_schemas import Img2ImgRequest, Txt2ImgRequest
from shared.hires import DEFAULT_STRENGTH, IMAGE_UPSCALERS, LATENT_TYPES, UPSCALERS
from shared.registry import ModelEntry
from shared.samplers import find_sampler, find_schedule, schedule_applies

# The value(s) of each field A1111 documents at which it does nothing (and what
# clients send for "unset"). Fields with no counterpart here.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "restore_faces": (False, None),
    "styles": ([], None),
    "subseed": (-1, 0, None),
    "subseed_strength": (0, None),
    "seed_resize_from_w": (-1, 0, None),
    "seed_resize_from_h": (-1, 0, None),
    # Ancestral samplers' noise: 1 (webuiapi's default) is A1111's and diffusers' own.
    "eta": (None, 0, 1),
    "s_churn": (0, None),
    "s_tmin": (0, None),
    "s_tmax": (0, None, math.inf),
    "s_noise": (1, None),
    "s_min_uncond": (0, None),
    "refiner_checkpoint": (None, "", "None"),
    "refiner_switch_at": (None, 0, 1),
    "script_name": (None, ""),
    "script_args": ([], None),
    "alwayson_scripts": ({}, None),
    "firstphase_width": (0, None),
    "firstphase_height": (0, None),
    "hr_checkpoint_name": (None, "", "Use same checkpoint"),
    "hr_sampler_name": (None, "", "Use same sampler"),
    "hr_scheduler": (None, "", "Use same scheduler"),
    "hr_prompt": (None, ""),
    "hr_negative_prompt": (None, ""),
    "hr_additional_modules": (None, [], ["Use same choices"]),
    "disable_extra_networks": (False, None),
}
# img2img's; the mask fields only where a mask was sent (they do nothing without).
IMG2IMG_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "resize_mode": (0, None),  # "Just resize": what darkroom does
    "initial_noise_multiplier": (None, 1),
    "image_cfg_scale": (None,),
}
MASK_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "mask_blur": (0, None),
    "mask_blur_x": (0, None),
    "mask_blur_y": (0, None),
    "inpainting_fill": (0, 1, None),  # "fill" / "original": the model repaints the mask
    "inpaint_full_res": (False, 0, None),  # "whole picture": what darkroom paints
    "inpaint_full_res_padding": (0, None),
}
# override_settings darkroom reads; any other is named.
OVERRIDES_USED = frozenset({CHECKPOINT_FIELD})


@dataclass
class Translated:
    """The job fields of a call's extras, and what was ignored (for the answer)."""

    fields: dict[str, Any] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)


def translate(body: Txt2ImgRequest, entry: ModelEntry, sampler: str | None) -> Translated:
    """The hires fix, tiling and schedule of `body` as job fields; every other field
    set and ignored, named."""
    out = Translated(ignored=_ignored(body))
    out.fields["tiling"] = bool(body.tiling)
    if body.enable_hr and not isinstance(body, Img2ImgRequest):
        out.fields["hires"] = _hires(body, entry, out.ignored)
    schedule = _schedule(body.scheduler, sampler, entry, out.ignored)
    if schedule is not None:
        out.fields["scheduler"] = schedule
    return out


def _hires(body: Txt2ImgRequest, entry: ModelEntry, ignored: list[str]) -> dict[str, Any]:
    upscaler = body.hr_upscaler or "Latent"
    if upscaler not in UPSCALERS:
        ignored.append(f"hr_upscaler: {upscaler} is not available here; Lanczos used")
        upscaler = "Lanczos"
    elif upscaler not in IMAGE_UPSCALERS and entry.type not in LATENT_TYPES:
        ignored.append(f"hr_upscaler: {entry.type} models take no latent upscale; Lanczos used")
        upscaler = "Lanczos"
    hires: dict[str, Any] = {
        "upscaler": upscaler,
        "strength": body.denoising_strength or DEFAULT_STRENGTH,
        "steps": body.hr_second_pass_steps or None,
    }
    if body.hr_resize_x or body.hr_resize_y:
        # A1111's "Resize width/height to" wins over hr_scale; 0 is "unset".
        hires.update(width=body.hr_resize_x or None, height=body.hr_resize_y or None)
    else:
        hires["scale"] = body.hr_scale
    return hires


def _schedule(
    name: str | None, sampler: str | None, entry: ModelEntry, ignored: list[str]
) -> str | None:
    """The job's `scheduler`. One the sampler cannot take is left out and named: A1111
    runs its timestep samplers (DDIM, PLMS, UniPC, LCM) on their own schedule too,
    whatever the field says. A name unknown or unavailable goes on: the core
    refuses it, naming it."""
    schedule = find_schedule(name)
    if schedule is None or not schedule.options:
        return name if schedule is None else None
    found = find_sampler(sampler, entry.type) if sampler is not None else None
    if found is not None and not schedule_applies(schedule, found.scheduler):
        ignored.append(f"scheduler: {schedule.label} does not apply to {found.name}")
        return None
    return schedule.name


def _ignored(body: Txt2ImgRequest) -> list[str]:
    sent = body.model_dump(exclude_unset=True)
    neutral = dict(NEUTRAL)
    if isinstance(body, Img2ImgRequest):
        neutral.update(IMG2IMG_NEUTRAL)
        if body.mask:
            neutral.update(MASK_NEUTRAL)
        elif body.enable_hr:
            sent["enable_hr"] = True  # A1111's img2img has no hires fix either
            neutral["enable_hr"] = (False, None)
    names = [name for name, value in sent.items() if name in neutral and value not in neutral[name]]
    overrides = body.override_settings or {}
    names += [f"override_settings.{key}" for key in overrides if key not in OVERRIDES_USED]
    return names


def header_value(ignored: list[str]) -> str:
    """The `Darkroom-Ignored` header: the fields ignored, by name, comma separated (the
    reasons are in `info.darkroom_ignored`; a header holds Latin-1 text only)."""
    names = [item.split(":", 1)[0].strip() for item in ignored]
    text = ", ".join(dict.fromkeys(names))
    return text.encode("latin-1", "replace").decode("latin-1")
