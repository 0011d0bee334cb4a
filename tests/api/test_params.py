"""resolve_params: a request's unset fields take the model's defaults; its limits are enforced."""

from __future__ import annotations

from typing import Any

import pytest

from api.images import DecodedImage
from api.params import resolve_params
from shared.errors import InvalidRequest
from shared.jobs import MAX_SEED, JobCreate
from shared.registry import ModelEntry, ModelParams

SD = ModelEntry(
    id="org/sd",
    type="sd",
    params=ModelParams(
        default_steps=20,
        max_steps=40,
        guidance_scale=6.5,
        default_size=(512, 384),
        max_size=(1024, 768),
        negative_prompt="low quality",
    ),
)
NO_I2I = ModelEntry(
    id="org/flux",
    type="flux",
    params=ModelParams(
        default_steps=4,
        max_steps=8,
        guidance_scale=0.0,
        supports_i2i=False,
        use_negative_prompt=False,
        default_size=(1024, 1024),
        max_size=(2048, 2048),
    ),
)


def job(**fields: Any) -> JobCreate:
    return JobCreate(prompt=fields.pop("prompt", "a lighthouse at dusk"), **fields)


def image(width: int, height: int) -> DecodedImage:
    return DecodedImage(data=b"png", width=width, height=height, format="PNG")


def refused(request: JobCreate, entry: ModelEntry, init: DecodedImage | None = None) -> str:
    """The field of the InvalidRequest that resolving `request` raises."""
    with pytest.raises(InvalidRequest) as info:
        resolve_params(request, entry, init)
    assert info.value.field is not None
    assert str(info.value)  # a message for the client
    return info.value.field


def test_defaults_come_from_the_entry() -> None:
    params = resolve_params(job(), SD, None)
    assert params.prompt == "a lighthouse at dusk"
    assert params.steps == 20
    assert (params.width, params.height) == (512, 384)
    assert params.guidance_scale == 6.5
    assert params.negative_prompt == "low quality"
    assert params.num_images == 1
    assert params.mode == "txt2img"
    assert params.strength is None
    assert 0 <= params.seed <= MAX_SEED


def test_request_values_win_over_defaults() -> None:
    params = resolve_params(
        job(
            steps=40,
            width=1024,
            height=768,
            guidance_scale=0.0,
            seed=MAX_SEED,
            negative_prompt="",
            num_images=4,
        ),
        SD,
        None,
    )
    assert params.steps == 40
    assert (params.width, params.height) == (1024, 768)
    assert params.guidance_scale == 0.0  # a falsy value is still the client's choice
    assert params.seed == MAX_SEED
    assert params.negative_prompt == ""  # explicitly empty, not the model's default
    assert params.num_images == 4


def test_seed_zero_is_kept() -> None:
    assert resolve_params(job(seed=0), SD, None).seed == 0


def test_seed_is_chosen_when_absent() -> None:
    seeds = {resolve_params(job(), SD, None).seed for _ in range(20)}
    assert all(0 <= seed <= MAX_SEED for seed in seeds)
    assert len(seeds) > 1  # drawn at random, not a constant


def test_model_without_negative_prompt_resolves_to_none() -> None:
    params = resolve_params(job(), NO_I2I, None)
    assert params.negative_prompt is None
    assert params.guidance_scale == 0.0
    assert params.steps == 4


def test_empty_default_negative_prompt_is_none() -> None:
    entry = ModelEntry(id="org/m", type="sd", params=ModelParams(negative_prompt=""))
    assert resolve_params(job(), entry, None).negative_prompt is None


def test_steps_over_max_steps_refused() -> None:
    assert refused(job(steps=41), SD) == "steps"
    assert resolve_params(job(steps=40), SD, None).steps == 40


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"width": 1032}, "width"),
        ({"height": 776}, "height"),
        ({"width": 1024, "height": 1024}, "height"),
    ],
)
def test_size_over_max_size_refused(fields: dict[str, int], field: str) -> None:
    assert refused(job(**fields), SD) == field


def test_a_size_over_max_size_names_the_size_and_the_models_maximum() -> None:
    with pytest.raises(InvalidRequest) as info:
        resolve_params(job(width=2048, height=512), SD, None, model="sd")
    assert str(info.value) == (
        "size 2048x512 is over sd's maximum of 1024x768 (max_size): its width is 2048, at most 1024"
    )


@pytest.mark.parametrize(
    ("fields", "field"), [({"width": 500}, "width"), ({"height": 65}, "height")]
)
def test_size_not_multiple_of_8_refused(fields: dict[str, int], field: str) -> None:
    assert refused(job(**fields), SD) == field


def test_init_image_on_model_without_i2i_refused() -> None:
    assert refused(job(), NO_I2I, image(512, 512)) == "init_image"


def test_negative_prompt_on_model_that_ignores_it_refused() -> None:
    assert refused(job(negative_prompt="blurry"), NO_I2I) == "negative_prompt"


def test_strength_without_init_image_refused() -> None:
    assert refused(job(strength=0.5), SD) == "strength"


def test_img2img_defaults_to_the_init_image_size_rounded_down() -> None:
    params = resolve_params(job(), SD, image(333, 250))
    assert (params.width, params.height) == (328, 248)
    assert params.mode == "img2img"
    assert params.strength == 0.75


def test_img2img_explicit_size_and_strength() -> None:
    params = resolve_params(job(width=256, height=128, strength=0.3), SD, image(333, 250))
    assert (params.width, params.height) == (256, 128)
    assert params.strength == 0.3


def test_img2img_init_image_larger_than_max_size_refused() -> None:
    # Named as the field that is too large, with or without an output size.
    assert refused(job(), SD, image(2000, 600)) == "init_image"
    assert refused(job(width=512, height=512), SD, image(2000, 600)) == "init_image"


def test_img2img_init_image_smaller_than_8_pixels_refused() -> None:
    assert refused(job(), SD, image(5, 64)) == "width"
