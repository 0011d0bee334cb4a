"""Live previews from a call's latents, on the real tiny pipeline (worker.previews)."""

from __future__ import annotations

import dataclasses
import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from shared.jobs import GenerationParams
from shared.registry import Registry
from shared.settings import Settings
from tests.support.polling import wait_until
from tests.worker.test_inference import params
from worker import inference
from worker.call_types import Request
from worker.engine import InlineEngine
from worker.loader import LoadedModel, load_model
from worker.models import ModelSet
from worker.previews import (
    LATENT_RGB,
    CallPreviews,
    PreviewEncoder,
    PreviewMaker,
    preview_decoder,
    preview_size,
    spatial_latents,
    to_pixels,
)


@pytest.fixture(scope="module")
def tiny(registry: Registry) -> LoadedModel:
    return load_model("tiny-sd", registry.models["tiny-sd"], registry.runtime.memory, "cpu")


def with_decoder(model: LoadedModel, decoder: str | None) -> LoadedModel:
    entry = model.entry.model_copy(update={"preview_decoder": decoder})
    return dataclasses.replace(model, entry=entry)


class Collected:
    """What a call's previews and latents were, step by step."""

    def __init__(self) -> None:
        self.previews: list[tuple[int, int, dict[int, list[bytes]]]] = []
        self.latents: dict[int, torch.Tensor] = {}
        self.done = threading.Event()

    def sink(self, step: int, steps: int, images: dict[int, list[bytes]], seconds: float) -> None:
        assert seconds >= 0
        self.previews.append((step, steps, images))
        self.done.set()


def run_with_previews(
    model: LoadedModel,
    requests: list[Request],
    mask: int = 1,
    interval_s: float = 0.0,
) -> tuple[list[list[Image.Image]], Collected]:
    """One call with a preview at every step (one at a time: each waits for its WebP)."""
    collected = Collected()
    encoder = PreviewEncoder()
    first = requests[0].params
    hook = CallPreviews(
        preview_decoder(model),
        [r.params.num_images for r in requests],
        (first.width, first.height),
        interval_s,
        lambda: mask,
        collected.sink,
        encoder,
    )

    def on_latents(pipe: Any, done: int, total: int, latents: torch.Tensor) -> None:
        collected.latents[done] = latents.clone()
        collected.done.clear()
        before = hook.made
        hook(pipe, done, total, latents)
        if hook.made > before:
            assert collected.done.wait(30)

    return inference.generate_batch(model, requests, None, on_latents), collected


def decode_webp(data: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(data))
    assert image.format == "WEBP"
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def sd_params(**overrides: object) -> GenerationParams:
    return params(**{"steps": 3, **overrides})


def test_linear_preview_is_the_projection_of_the_jobs_own_latents(tiny: LoadedModel) -> None:
    linear = with_decoder(tiny, None)  # the default of every model type
    [images], collected = run_with_previews(linear, [Request(sd_params())])
    assert [(step, steps) for step, steps, _ in collected.previews] == [(1, 3), (2, 3), (3, 3)]
    factors = torch.tensor(LATENT_RGB["sd"][0])
    for step, _, by_request in collected.previews:
        [webp] = by_request[0]
        preview = decode_webp(webp)
        assert preview.shape == (64, 64, 3)  # a 64x64 image: its size, under 512
        latents = collected.latents[step]
        expected = ((torch.einsum("nchw,cr->nrhw", latents, factors) + 1) / 2).clamp(0, 1)
        expected_pixels = to_pixels(expected, 64, 64)[0].numpy().astype(np.float64)
        # WebP is lossy: close to the projection, and far closer to its own step's
        # latents than to another step's.
        assert np.abs(preview - expected_pixels).mean() < 6
        assert correlation(preview, expected_pixels) > 0.95
    first = decode_webp(collected.previews[0][2][0][0])
    last = decode_webp(collected.previews[-1][2][0][0])
    assert not np.array_equal(first, last)
    assert len(images) == 1


def test_the_vae_decoder_previews_the_final_image_at_the_last_step(tiny: LoadedModel) -> None:
    model = with_decoder(tiny, "vae")
    [[image]], collected = run_with_previews(model, [Request(sd_params(seed=7))])
    [[other]], _ = run_with_previews(model, [Request(sd_params(seed=8, prompt="a blue whale"))])
    last = decode_webp(collected.previews[-1][2][0][0])
    final = np.asarray(image.convert("RGB"), dtype=np.float64)
    elsewhere = np.asarray(other.convert("RGB"), dtype=np.float64)
    assert correlation(last, final) > 0.9
    assert correlation(last, final) > correlation(last, elsewhere)


def test_a_taesd_decoder_from_a_local_path(tiny: LoadedModel, tmp_path: Path) -> None:
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    taesd = AutoencoderTiny(  # a tiny random one, of the real class and file layout
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    taesd.save_pretrained(tmp_path / "taesd")
    model = with_decoder(tiny, str(tmp_path / "taesd"))
    _, collected = run_with_previews(model, [Request(sd_params(steps=2))])
    step, _, by_request = collected.previews[-1]
    preview = decode_webp(by_request[0][0])
    with torch.inference_mode():
        decoded = taesd.decode(collected.latents[step]).sample
    expected = to_pixels(((decoded + 1) / 2).clamp(0, 1), 64, 64)[0].numpy().astype(np.float64)
    assert preview.shape == (64, 64, 3)
    assert np.abs(preview - expected).mean() < 6


def test_only_watched_requests_of_a_batch_get_previews(tiny: LoadedModel) -> None:
    requests = [
        Request(sd_params(steps=2)),
        Request(sd_params(steps=2, seed=9, num_images=2)),
        Request(sd_params(steps=2, seed=11)),
    ]
    _, collected = run_with_previews(tiny, requests, mask=0b010)
    assert collected.previews
    for _, _, by_request in collected.previews:
        assert list(by_request) == [1]
        assert len(by_request[1]) == 2  # one per image of that job
        first, second = (decode_webp(webp) for webp in by_request[1])
        assert not np.array_equal(first, second)


def test_no_preview_when_nobody_watches(tiny: LoadedModel) -> None:
    _, collected = run_with_previews(tiny, [Request(sd_params())], mask=0)
    assert collected.previews == []
    assert len(collected.latents) == 3  # the hook ran at every step


def test_at_most_one_preview_an_interval(tiny: LoadedModel) -> None:
    _, collected = run_with_previews(tiny, [Request(sd_params(steps=4))], interval_s=3600)
    assert [step for step, _, _ in collected.previews] == [1]


@pytest.mark.parametrize("model_type", sorted(LATENT_RGB))
def test_each_latent_space_projects_to_rgb(model_type: str) -> None:
    channels = len(LATENT_RGB[model_type][0])
    decode = preview_decoder(_fake_model(model_type))
    rgb = decode(object(), torch.randn(2, channels, 8, 12), 96, 64)
    assert rgb.shape == (2, 3, 8, 12)
    assert float(rgb.min()) >= 0
    assert float(rgb.max()) <= 1


def test_flux_latents_are_unpacked_before_the_projection() -> None:
    from diffusers import FluxPipeline

    spatial = torch.randn(1, 16, 16, 12)  # a 128x96 image's latents
    packed = FluxPipeline._pack_latents(spatial, 1, 16, 16, 12)
    pipe = type("Pipe", (), {"_unpack_latents": staticmethod(FluxPipeline._unpack_latents)})()
    pipe.vae_scale_factor = 8
    assert torch.equal(spatial_latents(pipe, packed, 128, 96), spatial)
    decode = preview_decoder(_fake_model("flux"))
    assert torch.allclose(decode(pipe, packed, 128, 96), decode(pipe, spatial, 128, 96))


def test_a_latent_space_without_factors_makes_no_preview_and_no_failure() -> None:
    sink_calls: list[int] = []
    hook = CallPreviews(
        preview_decoder(_fake_model("custom")),
        [1],
        (64, 64),
        0.0,
        lambda: 1,
        lambda step, *_: sink_calls.append(step),
        PreviewEncoder(),
    )
    hook(object(), 1, 2, torch.randn(1, 8, 8, 8))  # 8 channels: no known space
    hook(object(), 2, 2, torch.randn(1, 8, 8, 8))
    assert sink_calls == []
    assert hook.made == 0


def test_previews_are_at_most_512_pixels_on_the_long_side() -> None:
    assert preview_size(1024, 1024) == (512, 512)
    assert preview_size(2048, 1024) == (512, 256)
    assert preview_size(64, 96) == (64, 96)
    pixels = to_pixels(torch.rand(1, 3, 128, 96), 1024, 768)
    assert pixels.shape == (1, 384, 512, 3)
    assert pixels.dtype == torch.uint8


def test_the_inline_engine_makes_previews_of_watched_calls(tiny: LoadedModel) -> None:
    settings = Settings(previews=True, preview_interval_s=0.05)
    engine = InlineEngine(ModelSet.holding(tiny), settings)
    try:
        assert engine.makes_previews
        got: list[int] = []

        def watch_from_the_first_step(done: int, total: int) -> None:
            if done == 1:  # as the worker does: it asks once the call started
                engine.want_previews(call, 1)

        call = engine.submit([Request(sd_params(steps=3))], watch_from_the_first_step)
        call.on_preview = lambda step, steps, images, seconds: got.append(len(images[0]))
        call.result()
        # The last preview may still be encoding.
        wait_until(lambda: got, 30, 0.01, what="a preview of the watched call")
        watched_previews = len(got)
        quiet = engine.submit([Request(sd_params(steps=3))])
        quiet.on_preview = lambda *_: got.append(-1)
        quiet.result()
        engine.wait_idle()
    finally:
        engine.close()
    assert watched_previews >= 1
    assert -1 not in got


def test_the_maker_keeps_one_decoder_per_model(tiny: LoadedModel) -> None:
    maker = PreviewMaker(0.5)
    requests = [Request(sd_params())]
    first = maker.for_call(tiny, requests, lambda: 0, lambda *_: None)
    second = maker.for_call(tiny, requests, lambda: 0, lambda *_: None)
    assert first is not None
    assert second is not None
    assert first.decoder is second.decoder


def _fake_model(model_type: str) -> Any:
    entry = type("Entry", (), {"type": model_type, "preview_decoder": None})()
    return type("Model", (), {"entry": entry, "name": model_type})()
