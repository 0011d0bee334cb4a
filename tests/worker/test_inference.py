"""generate() on the real tiny Stable Diffusion pipeline, on CPU, with no broker or Redis."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.jobs import GenerationParams
from shared.registry import Registry
from worker.inference import (
    MAX_SCHEDULE_STEPS,
    generate,
    steps_for_strength,
    strength_for_schedule,
)
from worker.loader import LoadedModel, load_model


@pytest.fixture(scope="module")
def tiny(registry: Registry) -> LoadedModel:
    return load_model("tiny-sd", registry.models["tiny-sd"], registry.runtime.memory, "cpu")


def params(**overrides: object) -> GenerationParams:
    values: dict[str, object] = {
        "prompt": "a red fox in the snow",
        "negative_prompt": "blurry",
        "width": 64,
        "height": 64,
        "steps": 2,
        "guidance_scale": 7.5,
        "seed": 42,
        "num_images": 1,
    }
    values.update(overrides)
    return GenerationParams.model_validate(values)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def png_bytes(width: int, height: int, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_loaded_tiny_model_has_both_pipelines_on_cpu(tiny: LoadedModel) -> None:
    assert tiny.name == "tiny-sd"
    assert tiny.plan.device == "cpu"
    assert type(tiny.txt2img).__name__ == "StableDiffusionPipeline"
    assert type(tiny.img2img).__name__ == "StableDiffusionImg2ImgPipeline"
    # img2img shares the txt2img modules instead of holding a second copy.
    assert tiny.img2img.unet is tiny.txt2img.unet


@pytest.mark.parametrize(("width", "height"), [(64, 64), (64, 48), (48, 80)])
def test_txt2img_gives_pil_images_of_the_asked_size(
    tiny: LoadedModel, width: int, height: int
) -> None:
    images = generate(tiny, params(width=width, height=height))

    assert len(images) == 1
    [image] = images
    assert isinstance(image, Image.Image)
    assert image.size == (width, height)
    assert image.mode == "RGB"


def test_same_seed_gives_identical_pixels(tiny: LoadedModel) -> None:
    [first] = generate(tiny, params(seed=1234))
    [second] = generate(tiny, params(seed=1234))

    assert np.array_equal(pixels(first), pixels(second))


def test_different_seed_gives_different_pixels(tiny: LoadedModel) -> None:
    [first] = generate(tiny, params(seed=1234))
    [other] = generate(tiny, params(seed=1235))

    assert not np.array_equal(pixels(first), pixels(other))
    assert np.abs(pixels(first) - pixels(other)).mean() > 5


def test_num_images_uses_consecutive_seeds(tiny: LoadedModel) -> None:
    batch = generate(tiny, params(seed=10, num_images=2))
    [single_10] = generate(tiny, params(seed=10))
    [single_11] = generate(tiny, params(seed=11))

    assert len(batch) == 2
    assert all(image.size == (64, 64) for image in batch)
    # A batch of two runs the UNet at another batch size than two single runs,
    # so CPU kernels may round differently: allow one or two levels of 255.
    for from_batch, single in ((batch[0], single_10), (batch[1], single_11)):
        difference = np.abs(pixels(from_batch) - pixels(single))
        assert difference.max() <= 2, difference.max()
    # ...while the two images of the batch are genuinely different ones.
    assert np.abs(pixels(batch[0]) - pixels(batch[1])).mean() > 5


def test_img2img_produces_the_requested_size(tiny: LoadedModel) -> None:
    # The source is resized to the asked size before it is encoded.
    source = png_bytes(50, 30, (0, 0, 255))
    job = params(mode="img2img", strength=0.5, width=96, height=64, num_images=2)

    images = generate(tiny, job, init_image=source)

    assert [image.size for image in images] == [(96, 64), (96, 64)]


def test_img2img_is_deterministic_per_seed_and_depends_on_the_source(tiny: LoadedModel) -> None:
    job = params(mode="img2img", strength=0.5)
    [blue] = generate(tiny, job, init_image=png_bytes(64, 64, (0, 0, 255)))
    [blue_again] = generate(tiny, job, init_image=png_bytes(64, 64, (0, 0, 255)))
    [red] = generate(tiny, job, init_image=png_bytes(64, 64, (255, 0, 0)))

    assert np.array_equal(pixels(blue), pixels(blue_again))
    assert not np.array_equal(pixels(blue), pixels(red))


def test_img2img_without_an_init_image_is_refused(tiny: LoadedModel) -> None:
    from shared.errors import GenerationError

    with pytest.raises(GenerationError, match="image-to-image"):
        generate(tiny, params(mode="img2img", strength=0.5), init_image=None)


def test_on_step_reports_increasing_progress_ending_at_the_total(tiny: LoadedModel) -> None:
    calls: list[tuple[int, int]] = []

    generate(tiny, params(steps=4), on_step=lambda done, total: calls.append((done, total)))

    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert len(set(done)) == len(done)
    assert calls[-1][0] == calls[-1][1]


def test_on_step_for_img2img_ends_at_the_total(tiny: LoadedModel) -> None:
    calls: list[tuple[int, int]] = []

    generate(
        tiny,
        params(mode="img2img", strength=0.5, steps=4),
        init_image=png_bytes(64, 64, (0, 255, 0)),
        on_step=lambda done, total: calls.append((done, total)),
    )

    # strength 0.5 of 4 steps runs the last 2.
    assert calls == [(1, 2), (2, 2)]


@pytest.mark.parametrize(("steps", "strength"), [(3, 0.2), (2, 0.3), (4, 0.2), (2, 1e-9)])
def test_img2img_below_one_step_of_strength_runs_one_step(
    tiny: LoadedModel, steps: int, strength: float
) -> None:
    """int(steps x strength) is 0: diffusers would fail on an empty schedule; A1111
    runs one step, and so does darkroom (the probe: steps 3, denoising 0.2)."""
    calls: list[tuple[int, int]] = []

    [image] = generate(
        tiny,
        params(mode="img2img", strength=strength, steps=steps),
        init_image=png_bytes(64, 64, (0, 255, 0)),
        on_step=lambda done, total: calls.append((done, total)),
    )

    assert image.size == (64, 64)
    assert calls == [(1, 1)]


def test_inpainting_below_one_step_of_strength_runs_one_step(tiny: LoadedModel) -> None:
    mask = png_bytes(64, 64, (255, 255, 255))
    calls: list[tuple[int, int]] = []

    [image] = generate(
        tiny,
        params(mode="inpaint", strength=0.3, steps=2),
        init_image=png_bytes(64, 64, (0, 255, 0)),
        mask=mask,
        on_step=lambda done, total: calls.append((done, total)),
    )

    assert image.size == (64, 64)
    assert calls == [(1, 1)]


@pytest.mark.parametrize(
    ("steps", "strength", "length"),
    [(4, 0.5, 4), (3, 0.2, 5), (2, 0.3, 4), (10, 0.01, 100), (2, 1e-6, MAX_SCHEDULE_STEPS)],
)
def test_steps_for_strength_keeps_the_asked_steps_unless_none_would_run(
    steps: int, strength: float, length: int
) -> None:
    assert steps_for_strength(steps, strength) == length
    assert int(length * strength_for_schedule(length, strength)) == 1 or length == steps


class Canceled(Exception):
    pass


def test_an_on_step_that_raises_stops_generation(tiny: LoadedModel) -> None:
    calls: list[tuple[int, int]] = []

    def cancel(done: int, total: int) -> None:
        calls.append((done, total))
        raise Canceled(f"canceled at step {done}")

    with pytest.raises(Canceled, match="canceled at step 1"):
        generate(tiny, params(steps=5), on_step=cancel)

    assert calls == [(1, 5)]


def test_the_model_still_generates_after_a_canceled_run(tiny: LoadedModel) -> None:
    def cancel(done: int, total: int) -> None:
        raise Canceled

    with pytest.raises(Canceled):
        generate(tiny, params(seed=77, steps=3), on_step=cancel)
    [after] = generate(tiny, params(seed=77, steps=3))
    [fresh] = generate(tiny, params(seed=77, steps=3))

    assert np.array_equal(pixels(after), pixels(fresh))
