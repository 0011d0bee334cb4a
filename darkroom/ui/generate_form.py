"""The Generate form: the fields the chosen model allows, and what it hands over
on Generate.

A form sends everything at once on Generate: a prompt typed and not yet
"entered" is never lost, and no keystroke reruns the page. The image-to-image
section is not in it (darkroom/ui/image_input.py says why); its values join
the form's here.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from darkroom.ui.form import (
    AUTOMATIC_SCHEDULE,
    DEFAULT_HIRES_SCALE,
    DEFAULT_HIRES_STRENGTH,
    MAX_HIRES_SCALE,
    MAX_IMAGES,
    MAX_SEED,
    MIN_SIZE,
    MODEL_DEFAULT_SAMPLER,
    FormValues,
    HiresValues,
    ModelLimits,
    default_priority_index,
    sampler_options,
    schedule_options,
    upscalers_for,
)
from darkroom.ui.image_input import InitImage


def render(
    model: ModelLimits, priorities: tuple[str, ...], init_image: InitImage | None
) -> FormValues | None:
    """The form; its values (with the init image's) once Generate is pressed, else None."""
    with st.form("generate_form", border=False):
        prompt = st.text_area(
            "Prompt", key="prompt", placeholder="a lighthouse at dusk, oil painting"
        )
        negative_prompt = None
        if model.use_negative_prompt:
            negative_prompt = st.text_area(
                "Negative prompt", value=model.negative_prompt, key="negative_prompt", height=68
            )
        sizes = _size_fields(model)
        scheduler = _scheduler_fields(model)
        sampling = _sampling_fields(priorities)
        switches = _hires_and_tiling_fields(model, hires_applies=init_image is None)
        pressed = st.form_submit_button("Generate", type="primary", key="generate")
    if not pressed:
        return None
    return FormValues(
        prompt=prompt,
        negative_prompt=negative_prompt,
        init_image=init_image.data if init_image else None,
        strength=init_image.strength if init_image else None,
        mask_image=init_image.mask if init_image else None,
        **sizes,
        **scheduler,
        **sampling,
        **switches,
    )


def _size_fields(model: ModelLimits) -> dict[str, Any]:
    (default_w, default_h), (max_w, max_h) = model.default_size, model.max_size
    width_column, height_column = st.columns(2)
    steps_column, guidance_column = st.columns(2)
    return {
        "width": width_column.number_input(
            "Width", MIN_SIZE, max_w, default_w, step=8, key="width"
        ),
        "height": height_column.number_input(
            "Height", MIN_SIZE, max_h, default_h, step=8, key="height"
        ),
        "steps": steps_column.number_input(
            "Steps", 1, model.max_steps, model.default_steps, key="steps"
        ),
        "guidance_scale": guidance_column.slider(
            "Guidance", 0.0, model.max_guidance, model.guidance_scale, step=0.5, key="guidance"
        ),
    }


def _scheduler_fields(model: ModelLimits) -> dict[str, Any]:
    """The sampler and its sigma schedule, as GET /models lists them for the model
    (nothing to pick from an API that lists none)."""
    samplers, schedules = sampler_options(model), schedule_options(model)
    sampler_column, schedule_column = st.columns(2)
    picked: dict[str, Any] = {"sampler": None, "scheduler": None}
    if samplers:
        sampler = sampler_column.selectbox(
            "Sampler",
            samplers,
            key="sampler",
            help="AUTOMATIC1111's names. Model default: the model's own scheduler.",
        )
        picked["sampler"] = None if sampler == MODEL_DEFAULT_SAMPLER else sampler
    if schedules:
        schedule = schedule_column.selectbox(
            "Schedule type",
            schedules,
            key="scheduler",
            help="The sigma schedule. Automatic: the sampler's own. Not every sampler "
            "takes every schedule: the API says which when it refuses one.",
        )
        picked["scheduler"] = None if schedule == AUTOMATIC_SCHEDULE else schedule
    return picked


def _sampling_fields(priorities: tuple[str, ...]) -> dict[str, Any]:
    seed_column, images_column, priority_column = st.columns(3)
    return {
        "seed": seed_column.number_input(
            "Seed",
            0,
            MAX_SEED,
            value=None,
            placeholder="random",
            key="seed",
            help="Empty: a random seed (shown with the result). The same seed and "
            "parameters make the same image.",
        ),
        "num_images": images_column.number_input("Images", 1, MAX_IMAGES, 1, key="num_images"),
        # Only what the caller's key may use (GET /me): the API refuses the others.
        "priority": priority_column.selectbox(
            "Priority", priorities, index=default_priority_index(priorities), key="priority"
        ),
    }


def _hires_and_tiling_fields(model: ModelLimits, hires_applies: bool) -> dict[str, Any]:
    """A1111's switches, folded away: most jobs use neither. The hires fix is a
    text-to-image job's, on a model whose image-to-image runs its second pass."""
    hires_applies = hires_applies and model.supports_i2i
    with st.expander("Hires fix and tiling" if hires_applies else "Tiling"):
        hires = _hires_fields(model) if hires_applies else None
        tiling = st.checkbox(
            "Tiling",
            key="tiling",
            help="Seamless: the image wraps around at its edges, for textures.",
        )
    return {"hires": hires, "tiling": tiling}


def _hires_fields(model: ModelLimits) -> HiresValues | None:
    """Its fields show whether or not it is on: a form reruns nothing on a tick."""
    on = st.checkbox(
        "Hires fix",
        key="hires",
        help="Generate at the size above, upscale, then a second image-to-image pass "
        "adds the detail: sizes the model was not trained at, without doubled heads.",
    )
    scale_column, steps_column = st.columns(2)
    strength_column, upscaler_column = st.columns(2)
    scale = scale_column.number_input(
        "Upscale by", 1.0, MAX_HIRES_SCALE, DEFAULT_HIRES_SCALE, step=0.25, key="hires_scale"
    )
    steps = steps_column.number_input(
        "Hires steps",
        1,
        model.max_steps,
        value=None,
        placeholder="as the first pass",
        key="hires_steps",
    )
    strength = strength_column.slider(
        "Hires strength",
        0.05,
        1.0,
        DEFAULT_HIRES_STRENGTH,
        step=0.05,
        key="hires_strength",
        help="How much the second pass changes the upscaled image.",
    )
    upscaler = upscaler_column.selectbox(
        "Upscaler",
        upscalers_for(model),
        key="hires_upscaler",
        help="Latent: the latents, then the second pass redraws the detail (SD and SDXL "
        "only). Lanczos, Nearest: the decoded image.",
    )
    return HiresValues(scale, strength, upscaler, steps) if on else None
