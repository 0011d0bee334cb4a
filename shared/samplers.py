"""Samplers under AUTOMATIC1111's names, as diffusers schedulers (data only: no torch).

The names are what A1111, its clients (webuiapi, Open WebUI, SillyTavern) and
most users know; the mapping follows diffusers' own table ("Schedulers": A1111 /
k-diffusion names). The API validates a job's sampler against this table and
the worker builds the scheduler from it (worker/samplers.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sampler:
    name: str
    scheduler: str  # a diffusers scheduler class
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    aliases: tuple[str, ...] = ()


KARRAS = {"use_karras_sigmas": True}

# For UNet models (sd, sdxl, custom pipelines built on them): every noise-prediction
# scheduler diffusers has an A1111 name for.
NOISE_SAMPLERS = [
    Sampler("Euler", "EulerDiscreteScheduler", aliases=("k_euler",)),
    Sampler("Euler a", "EulerAncestralDiscreteScheduler", aliases=("k_euler_a",)),
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", aliases=("k_dpmpp_2m",)),
    Sampler("DPM++ 2M Karras", "DPMSolverMultistepScheduler", KARRAS),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    Sampler(
        "DPM++ 2M SDE Karras",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", **KARRAS},
    ),
    Sampler("DPM++ SDE", "DPMSolverSinglestepScheduler", aliases=("k_dpmpp_sde",)),
    Sampler("DPM++ SDE Karras", "DPMSolverSinglestepScheduler", KARRAS),
    Sampler("DPM2", "KDPM2DiscreteScheduler", aliases=("k_dpm_2",)),
    Sampler("DPM2 Karras", "KDPM2DiscreteScheduler", KARRAS),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", aliases=("k_dpm_2_a",)),
    Sampler("Heun", "HeunDiscreteScheduler", aliases=("k_heun",)),
    Sampler("LMS", "LMSDiscreteScheduler", aliases=("k_lms",)),
    Sampler("LMS Karras", "LMSDiscreteScheduler", KARRAS),
    Sampler("DDIM", "DDIMScheduler", aliases=("ddim",)),
    # PLMS as Stable Diffusion ships it: without the Runge-Kutta warm-up steps.
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, aliases=("plms",)),
    Sampler("UniPC", "UniPCMultistepScheduler", aliases=("unipc",)),
]
# Flow-matching models (flux, sd3) denoise along a flow: the noise schedulers above
# do not apply. Euler is the one they are trained and served with.
FLOW_SAMPLERS = [Sampler("Euler", "FlowMatchEulerDiscreteScheduler", aliases=("k_euler",))]
FLOW_TYPES = frozenset({"flux", "sd3"})

# A1111's separate "scheduler" field (its newer API) names a sigma schedule;
# "Karras" picks the Karras variant of the sampler where there is one.
KARRAS_SCHEDULES = frozenset({"karras", "Karras"})


def samplers_for(model_type: str) -> list[Sampler]:
    """The samplers a model of `model_type` can run."""
    return FLOW_SAMPLERS if model_type in FLOW_TYPES else NOISE_SAMPLERS


def find_sampler(name: str, model_type: str, schedule: str | None = None) -> Sampler | None:
    """The sampler `name` (its A1111 name or alias, any case) for `model_type`, or None."""
    wanted = name.strip().lower()
    if schedule in KARRAS_SCHEDULES and not wanted.endswith("karras"):
        karras = find_sampler(f"{name} Karras", model_type)
        if karras is not None:
            return karras
    for sampler in samplers_for(model_type):
        if wanted == sampler.name.lower() or wanted in sampler.aliases:
            return sampler
    return None


def sampler_names(model_type: str) -> list[str]:
    return [sampler.name for sampler in samplers_for(model_type)]
