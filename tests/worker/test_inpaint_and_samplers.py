"""Inpainting and samplers on the real tiny Stable Diffusion pipeline, on CPU."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.errors import GenerationError
from tests.worker.test_inference import params, pixels, tiny  # noqa: F401  (fixture)
from worker.batching import BatchKey
from worker.inference import generate
from worker.loader import LoadedModel
from worker.samplers import sampler_in_use


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _source(size: tuple[int, int] = (64, 64)) -> Image.Image:
    # A gradient: every pixel differs, so any change to one shows.
    x = np.linspace(0, 255, size[0], dtype=np.uint8)
    y = np.linspace(255, 0, size[1], dtype=np.uint8)
    rgb = np.stack([*np.meshgrid(x, y), np.full((size[1], size[0]), 90, np.uint8)], axis=-1)
    return Image.fromarray(rgb, "RGB")


def _left_half_mask(size: tuple[int, int] = (64, 64)) -> Image.Image:
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[:, : size[0] // 2] = 255
    return Image.fromarray(mask, "L")


def test_inpainting_keeps_every_pixel_outside_the_mask(tiny: LoadedModel) -> None:  # noqa: F811
    source = _source()
    [image] = generate(
        tiny,
        params(mode="inpaint", strength=1.0),
        _png(source),
        mask=_png(_left_half_mask()),
    )
    out, before = pixels(image), pixels(source)
    assert image.size == source.size
    assert np.array_equal(out[:, 32:], before[:, 32:])  # kept: exactly the input
    assert np.abs(out[:, :32] - before[:, :32]).mean() > 5  # repainted


def test_inpainting_an_odd_sized_image_keeps_its_size_and_pixels(
    tiny: LoadedModel,  # noqa: F811
) -> None:
    # The pipeline works on the 8-pixel grid; the answer is the input's own size.
    source = _source((70, 61))
    [image] = generate(
        tiny,
        params(mode="inpaint", strength=1.0, width=64, height=56),
        _png(source),
        mask=_png(_left_half_mask((70, 61))),
    )
    assert image.size == (70, 61)
    assert np.array_equal(pixels(image)[:, 35:], pixels(source)[:, 35:])


def test_a_jobs_sampler_is_used_then_the_models_own_comes_back(
    tiny: LoadedModel,  # noqa: F811
) -> None:
    pipe = tiny.txt2img
    own = pipe.scheduler
    used: list[object] = []
    original_call = type(pipe).__call__

    with sampler_in_use(pipe, "DPM++ 2M Karras", "sd"):
        used.append(pipe.scheduler)
    assert type(used[0]).__name__ == "DPMSolverMultistepScheduler"
    assert used[0].config.use_karras_sigmas is True  # type: ignore[attr-defined]
    assert pipe.scheduler is own
    assert original_call is type(pipe).__call__

    with pytest.raises(RuntimeError), sampler_in_use(pipe, "Euler a", "sd"):
        raise RuntimeError("the job failed mid-call")
    assert pipe.scheduler is own  # never leaks into the next job


def test_samplers_change_the_image_and_each_is_reproducible(
    tiny: LoadedModel,  # noqa: F811
) -> None:
    euler = generate(tiny, params(sampler="Euler", steps=4))[0]
    ddim = generate(tiny, params(sampler="DDIM", steps=4))[0]
    again = generate(tiny, params(sampler="Euler", steps=4))[0]
    assert np.array_equal(pixels(euler), pixels(again))
    assert not np.array_equal(pixels(euler), pixels(ddim))


def test_every_listed_sampler_runs_on_a_unet_model(tiny: LoadedModel) -> None:  # noqa: F811
    from shared.samplers import sampler_names

    for name in sampler_names("sd"):
        [image] = generate(tiny, params(sampler=name, steps=2))
        assert image.size == (64, 64), name


def test_a_sampler_that_does_not_fit_the_model_fails_the_job(
    tiny: LoadedModel,  # noqa: F811
) -> None:
    with pytest.raises(GenerationError, match="does not apply"):
        generate(tiny, params(sampler="DPM2 a Karras nonsense"))


def test_batches_group_only_jobs_with_the_same_sampler() -> None:
    assert BatchKey.of(params(sampler="Euler")) == BatchKey.of(params(sampler="Euler"))
    assert BatchKey.of(params(sampler="Euler")) != BatchKey.of(params(sampler="DDIM"))
    assert BatchKey.of(params()) != BatchKey.of(params(sampler="Euler"))


def test_the_schedule_table_matches_the_diffusers_classes() -> None:
    # The API refuses a schedule a sampler cannot take from this table, without
    # diffusers: it must say what the classes really take.
    import inspect

    import diffusers

    from shared.samplers import _SIGMAS, _SPACING, SCHEDULE_OPTIONS

    for class_name, options in SCHEDULE_OPTIONS.items():
        taken = set(inspect.signature(getattr(diffusers, class_name).__init__).parameters)
        assert taken & (_SIGMAS | _SPACING) == options, class_name


def test_a_jobs_schedule_sets_its_options_then_the_models_own_comes_back(
    tiny: LoadedModel,  # noqa: F811
) -> None:
    pipe = tiny.txt2img
    own = pipe.scheduler
    with sampler_in_use(pipe, "DPM++ 3M SDE", "sd", "exponential"):
        config = pipe.scheduler.config
        assert (config.solver_order, config.use_exponential_sigmas) == (3, True)
    with sampler_in_use(pipe, None, "sd", "sgm_uniform"):
        # No sampler named: the model's own scheduler class, on the schedule.
        assert type(pipe.scheduler) is type(own)
        assert pipe.scheduler.config.timestep_spacing == "trailing"
    assert pipe.scheduler is own


def test_every_schedule_runs_and_changes_the_image(tiny: LoadedModel) -> None:  # noqa: F811
    from shared.samplers import SCHEDULES

    own = pixels(generate(tiny, params(sampler="Euler", steps=3))[0])
    for schedule in SCHEDULES[1:]:
        [image] = generate(tiny, params(sampler="Euler", scheduler=schedule.name, steps=3))
        assert image.size == (64, 64), schedule.name
        # This model's Euler spaces its steps linearly already: those two keep it.
        same = schedule.name in ("uniform", "normal")
        assert np.array_equal(pixels(image), own) == same, schedule.name


def test_a_schedule_the_models_own_scheduler_cannot_take_fails_the_job(
    tiny: LoadedModel,  # noqa: F811
) -> None:
    with pytest.raises(GenerationError, match="does not apply"):
        generate(tiny, params(sampler="DDIM", scheduler="karras"))


def test_batches_group_only_jobs_with_the_same_schedule() -> None:
    assert BatchKey.of(params(scheduler="karras")) != BatchKey.of(params())
