"""Hires fix and seamless tiling on the real tiny Stable Diffusion pipeline, on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from shared.hires import HiresParams
from tests.worker.test_inference import params, pixels, tiny  # noqa: F401  (fixture)
from worker.batching import BatchKey
from worker.hires import hires_upscaler
from worker.inference import generate
from worker.loader import LoadedModel
from worker.tiling import tiling_in_use


def hires(**overrides: object) -> HiresParams:
    values: dict[str, object] = {
        "width": 128,
        "height": 128,
        "steps": 2,
        "strength": 0.7,
        "upscaler": "Latent",
    }
    return HiresParams.model_validate({**values, **overrides})


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (bicubic antialiased)", "Lanczos"])
def test_hires_answers_the_upscaled_size_and_is_reproducible(
    tiny: LoadedModel,  # noqa: F811
    upscaler: str,
) -> None:
    job = params(hires=hires(upscaler=upscaler), num_images=2)
    images = generate(tiny, job)
    assert [image.size for image in images] == [(128, 128)] * 2
    assert not np.array_equal(pixels(images[0]), pixels(images[1]))  # seeds 42 and 43
    again = generate(tiny, job)
    assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(images, again, strict=True))


def test_hires_keeps_the_first_passs_composition(tiny: LoadedModel) -> None:  # noqa: F811
    # A light second pass on the image upscale: the result is the first pass's
    # image, enlarged, more than another seed's.
    base = generate(tiny, params(seed=7))[0].resize((128, 128), Image.Resampling.LANCZOS)
    other = generate(tiny, params(seed=8))[0].resize((128, 128), Image.Resampling.LANCZOS)
    [image] = generate(tiny, params(seed=7, hires=hires(upscaler="Lanczos", strength=0.2)))
    mine = pixels(image)
    assert np.abs(mine - pixels(base)).mean() < np.abs(mine - pixels(other)).mean()


def test_hires_counts_both_passes_in_the_jobs_progress(tiny: LoadedModel) -> None:  # noqa: F811
    seen: list[tuple[int, int]] = []
    generate(
        tiny,
        params(steps=3, hires=hires(steps=4, strength=0.5)),
        on_step=lambda done, total: seen.append((done, total)),
    )
    # 3 steps, then 2 of a 4-step schedule at strength 0.5: 5 in all, in order.
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_hires_to_another_aspect_ratio_crops_rather_than_stretches() -> None:
    upscaler = hires_upscaler("Latent")
    latents = torch.arange(8 * 8, dtype=torch.float32).reshape(1, 1, 8, 8)
    out = upscaler.upscale(latents, (64, 64), (128, 64), pipe=None)
    assert tuple(out.shape) == (1, 1, 8, 16)
    image = Image.new("RGB", (64, 64))
    [cropped] = hires_upscaler("Nearest").upscale([image], (64, 64), (64, 128), pipe=None)
    assert cropped.size == (64, 128)


def test_tiling_makes_the_image_wrap_around(tiny: LoadedModel) -> None:  # noqa: F811
    # With every convolution padded circularly the model cannot tell where the
    # image's edges are: latents rolled by half their width give the same image
    # rolled by half its width. Zero padding sees the edges, and it does not.
    pipe = tiny.txt2img
    latents = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(3))

    def image(start: torch.Tensor, tiling: bool) -> np.ndarray:
        with torch.inference_mode(), tiling_in_use(pipe, tiling):
            out = pipe(
                "a tiled floor",
                latents=start,
                width=128,
                height=128,
                num_inference_steps=2,
                generator=torch.Generator().manual_seed(0),
                output_type="np",
            )
        return np.asarray(out.images[0])

    def wraps(tiling: bool) -> float:
        rolled = image(torch.roll(latents, 8, dims=3), tiling)
        return float(np.abs(np.roll(image(latents, tiling), 64, axis=1) - rolled).max())

    assert wraps(tiling=True) < 1e-3
    assert wraps(tiling=False) > 0.05


def test_a_tiling_job_differs_from_a_plain_one(tiny: LoadedModel) -> None:  # noqa: F811
    plain = generate(tiny, params(seed=1))[0]
    tiled = generate(tiny, params(seed=1, tiling=True))[0]
    assert tiled.size == plain.size
    assert not np.array_equal(pixels(tiled), pixels(plain))


def test_tiling_is_put_back_after_the_call_even_when_it_fails(
    tiny: LoadedModel,  # noqa: F811
) -> None:
    pipe = tiny.txt2img
    convs = [m for m in pipe.unet.modules() if isinstance(m, torch.nn.Conv2d)]
    seen: list[set[str]] = []

    def failing_call() -> None:
        seen.append({conv.padding_mode for conv in convs})
        raise RuntimeError("the job failed mid-call")

    with pytest.raises(RuntimeError), tiling_in_use(pipe, True):
        failing_call()
    assert seen == [{"circular"}]
    assert {conv.padding_mode for conv in convs} == {"zeros"}


def test_batches_group_only_jobs_with_the_same_hires_and_tiling() -> None:
    assert BatchKey.of(params(hires=hires())) == BatchKey.of(params(hires=hires()))
    assert BatchKey.of(params(hires=hires())) != BatchKey.of(params())
    assert BatchKey.of(params(tiling=True)) != BatchKey.of(params())
