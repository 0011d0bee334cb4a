"""Samplers and schedules under AUTOMATIC1111's names, as diffusers schedulers (data only:
no torch).

The names are what A1111, its clients (webuiapi, Open WebUI, SillyTavern) and
most users know; the mapping follows diffusers' own tables ("Schedulers": A1111 /
k-diffusion names, and "Noise schedules and schedule types"). The API validates a
job's sampler and schedule against these tables and the worker builds the
scheduler from them (worker/samplers.py).

A1111 1.6+ splits the old names ("DPM++ 2M Karras") into a sampler ("DPM++ 2M")
and a separate `scheduler` field ("Karras"): both forms work here. What diffusers
cannot express (A1111's "Restart", "DPM fast", "Align Your Steps", ...) is
refused by name, never run as something else.
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


@dataclass(frozen=True)
class Schedule:
    """A1111's `scheduler` field: a sigma schedule, as options of the diffusers scheduler."""

    name: str  # A1111's id ("sgm_uniform"), what its API lists as `name`
    label: str  # A1111's label ("SGM Uniform"), what its page shows
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    aliases: tuple[str, ...] = ()

    @property
    def needs(self) -> frozenset[str]:
        """The scheduler __init__ arguments this schedule sets."""
        return frozenset(self.options)


KARRAS = {"use_karras_sigmas": True}
EXPONENTIAL = {"use_exponential_sigmas": True}
SDE = {"algorithm_type": "sde-dpmsolver++"}

# For UNet models (sd, sdxl, custom pipelines built on them): every noise-prediction
# scheduler diffusers has an A1111 name for.
NOISE_SAMPLERS = [
    Sampler("Euler", "EulerDiscreteScheduler", aliases=("k_euler",)),
    Sampler(
        "Euler a", "EulerAncestralDiscreteScheduler", aliases=("k_euler_a", "k_euler_ancestral")
    ),
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", aliases=("k_dpmpp_2m",)),
    Sampler("DPM++ 2M Karras", "DPMSolverMultistepScheduler", KARRAS),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler", SDE, aliases=("k_dpmpp_2m_sde",)),
    Sampler("DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler", {**SDE, **KARRAS}),
    Sampler(
        "DPM++ 2M SDE Heun",
        "DPMSolverMultistepScheduler",
        {**SDE, "solver_type": "heun"},
        aliases=("k_dpmpp_2m_sde_heun",),
    ),
    Sampler(
        "DPM++ 3M SDE",
        "DPMSolverMultistepScheduler",
        {**SDE, "solver_order": 3},
        aliases=("k_dpmpp_3m_sde",),
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
    # For LCM-distilled models and LCM-LoRAs (few steps, low CFG); on others it blurs.
    Sampler("LCM", "LCMScheduler", aliases=("k_lcm", "lcm")),
]
# Flow-matching models (flux, sd3) denoise along a flow: the noise schedulers above
# do not apply. Euler is the one they are trained and served with.
FLOW_SAMPLERS = [Sampler("Euler", "FlowMatchEulerDiscreteScheduler", aliases=("k_euler",))]
FLOW_TYPES = frozenset({"flux", "sd3"})

# A1111's samplers with no diffusers counterpart: refused by name.
UNAVAILABLE_SAMPLERS = frozenset(
    {"DPM++ 2S a", "DPM fast", "DPM adaptive", "Restart", "DDIM CFG++"}
)

SCHEDULES = [
    Schedule("automatic", "Automatic"),  # the sampler's own schedule
    Schedule("uniform", "Uniform", {"timestep_spacing": "linspace"}),
    Schedule("karras", "Karras", KARRAS),
    Schedule("exponential", "Exponential", {"timestep_spacing": "linspace", **EXPONENTIAL}),
    Schedule("sgm_uniform", "SGM Uniform", {"timestep_spacing": "trailing"}, ("SGMUniform",)),
    Schedule("simple", "Simple", {"timestep_spacing": "trailing"}),
    Schedule("normal", "Normal", {"timestep_spacing": "linspace"}),
    Schedule("ddim", "DDIM", {"timestep_spacing": "leading"}),
    Schedule("beta", "Beta", {"timestep_spacing": "linspace", "use_beta_sigmas": True}),
]
# A1111's schedules with no diffusers counterpart: refused by name.
UNAVAILABLE_SCHEDULES = frozenset(
    {"polyexponential", "Polyexponential", "kl_optimal", "KL Optimal"}
    | {"align_your_steps", "Align Your Steps"}
)

# The schedule options each scheduler class takes (diffusers 0.3x; the worker's
# tests check this table against the classes' own signatures). A schedule a
# sampler cannot take is refused at submit, naming both.
_SIGMAS = frozenset({"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"})
_SPACING = frozenset({"timestep_spacing"})
SCHEDULE_OPTIONS: dict[str, frozenset[str]] = {
    "EulerDiscreteScheduler": _SIGMAS | _SPACING,
    "EulerAncestralDiscreteScheduler": _SPACING,
    "DPMSolverMultistepScheduler": _SIGMAS | _SPACING,
    "DPMSolverSinglestepScheduler": _SIGMAS,
    "KDPM2DiscreteScheduler": _SIGMAS | _SPACING,
    "KDPM2AncestralDiscreteScheduler": _SIGMAS | _SPACING,
    "HeunDiscreteScheduler": _SIGMAS | _SPACING,
    "LMSDiscreteScheduler": _SIGMAS | _SPACING,
    "DDIMScheduler": _SPACING,
    "PNDMScheduler": _SPACING,
    "UniPCMultistepScheduler": _SIGMAS | _SPACING,
    "LCMScheduler": _SPACING,
    "FlowMatchEulerDiscreteScheduler": _SIGMAS,
}


def samplers_for(model_type: str) -> list[Sampler]:
    """The samplers a model of `model_type` can run."""
    return FLOW_SAMPLERS if model_type in FLOW_TYPES else NOISE_SAMPLERS


def find_sampler(name: str, model_type: str, schedule: str | None = None) -> Sampler | None:
    """The sampler `name` (its A1111 name or alias, any case) for `model_type`, or None.

    A1111's older names with the schedule in them ("DPM++ 3M SDE Exponential") are
    the sampler with that schedule's options. `schedule` "Karras" picks a listed
    Karras variant ("DPM++ 2M" -> "DPM++ 2M Karras"), the name A1111 reports.
    """
    wanted = name.strip().lower()
    if find_schedule(schedule) == _KARRAS and not wanted.endswith("karras"):
        karras = find_sampler(f"{name} Karras", model_type)
        if karras is not None:
            return karras
    for sampler in samplers_for(model_type):
        if wanted == sampler.name.lower() or wanted in sampler.aliases:
            return sampler
    return _with_schedule_suffix(name.strip(), model_type)


def _with_schedule_suffix(name: str, model_type: str) -> Sampler | None:
    base, _, suffix = name.rpartition(" ")
    schedule = find_schedule(suffix) if base else None
    if schedule is None or not schedule.options:
        return None
    sampler = find_sampler(base, model_type)
    if sampler is None or not schedule_applies(schedule, sampler.scheduler):
        return None
    return Sampler(name, sampler.scheduler, {**sampler.options, **schedule.options})


def sampler_names(model_type: str) -> list[str]:
    return [sampler.name for sampler in samplers_for(model_type)]


def find_schedule(name: str | None) -> Schedule | None:
    """The schedule `name` (A1111's id, label or alias, any case), or None."""
    if name is None:
        return None
    wanted = name.strip().lower()
    for schedule in SCHEDULES:
        known = (schedule.name, schedule.label.lower(), *(a.lower() for a in schedule.aliases))
        if wanted in known:
            return schedule
    return None


_KARRAS = find_schedule("karras")


def schedule_applies(schedule: Schedule, scheduler_class: str) -> bool:
    """Whether a scheduler of `scheduler_class` takes `schedule`'s options."""
    return schedule.needs <= SCHEDULE_OPTIONS.get(scheduler_class, frozenset())


def schedules_for(sampler: Sampler) -> list[Schedule]:
    """The schedules `sampler` can run with (always "automatic": its own)."""
    return [s for s in SCHEDULES if schedule_applies(s, sampler.scheduler)]


def schedule_names() -> list[str]:
    return [schedule.label for schedule in SCHEDULES]


def schedule_labels(model_type: str) -> list[str]:
    """The schedules at least one sampler of `model_type` takes, by label."""
    samplers = samplers_for(model_type)
    return [s.label for s in SCHEDULES if any(schedule_applies(s, x.scheduler) for x in samplers)]
