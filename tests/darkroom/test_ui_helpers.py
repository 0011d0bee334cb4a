"""The web page's plain helpers (no Streamlit, no server): request bodies, masks, progress,
errors."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from darkroom.client import ApiError, ApiUnreachable
from darkroom.ui import form, mask, messages, progress
from shared import hires as api_hires

SD_INFO = {
    "description": "d",
    "default_steps": 30,
    "max_steps": 50,
    "default_size": [512, 512],
    "max_size": [1024, 768],
    "guidance_scale": 7.5,
    "supports_i2i": True,
    "use_negative_prompt": False,
    "workers": 0,
}
SD_LIMITS = form.ModelLimits.from_api("sd", SD_INFO)


def test_request_body_leaves_out_what_the_model_would_refuse() -> None:
    values = form.FormValues(
        prompt="p", negative_prompt="ugly", seed=None, init_image=None, strength=0.4
    )
    assert form.request_body(SD_LIMITS, values) == {
        "prompt": "p",
        "model": "sd",
        "num_images": 1,
        "priority": "normal",
    }
    with_image = form.FormValues(prompt="p", init_image=b"\x89PNG", seed=5)
    body = form.request_body(SD_LIMITS, with_image)
    assert (body["init_image"], body["strength"], body["seed"]) == ("iVBORw==", 0.75, 5)
    assert SD_LIMITS.max_guidance == 20.0
    assert "no worker serves it now" in SD_LIMITS.summary()


def test_the_page_offers_servable_models_and_says_where_each_is() -> None:
    def limits(**flags: bool) -> form.ModelLimits:
        return form.ModelLimits.from_api("m", {**SD_INFO, **flags})

    assert "loaded on a worker now" in limits(resident=True, loadable=True).summary()
    assert "loads it for its next job" in limits(loadable=True).summary()
    assert "jobs for it are refused" in limits(servable=False).summary()
    models = {
        "a": limits(servable=True),
        "b": limits(servable=False),
        "c": limits(servable=True),
    }
    assert form.offered(models) == ["a", "c"]
    assert form.offered({"b": limits(servable=False)}) == ["b"]


# A text-to-image job's params, as GET /jobs answers them.
TXT2IMG_PARAMS = {
    "prompt": "p",
    "negative_prompt": None,
    "width": 64,
    "height": 64,
    "steps": 2,
    "guidance_scale": 7.5,
    "seed": 9,
    "num_images": 2,
    "mode": "txt2img",
}


def test_rerun_body_repeats_a_text_to_image_job_only() -> None:
    params = TXT2IMG_PARAMS
    job = {"model": "tiny-sd", "priority": "high", "params": params}
    # Every parameter again, but the mode (the API's to say) and the negative prompt
    # of a model that uses none (it would refuse one).
    repeated = {k: v for k, v in params.items() if k not in ("mode", "negative_prompt")}
    assert form.rerun_body(job) == {"model": "tiny-sd", "priority": "high", **repeated}
    assert form.rerun_body({**job, "params": {**params, "mode": "img2img"}}) is None


def test_progress_counts_steps_and_estimates_the_time_left() -> None:
    params = {"steps": 20, "mode": "txt2img"}
    job = {"status": "running", "progress": 0.25, "params": params, "timings": {"running_s": 3.0}}
    assert progress.running_text(job) == "step 5/20, about 9 s left"
    assert progress.running_text({**job, "progress": 0.0}) == "step 0/20, estimating the time left"
    assert progress.total_steps({"steps": 20, "mode": "img2img", "strength": 0.5}) == 10
    assert progress.seconds_left(0.5, None) is None
    assert progress.format_duration(125) == "2 min 5 s"
    assert progress.status_text({"status": "queued", "queue_position": 2}) == "Queued: 2 jobs ahead"


def test_api_errors_read_as_what_to_do() -> None:
    url = "http://api:8000"
    assert messages.describe_api_error(ApiError(429, "slow down", 4.2), url).startswith(
        "rate limited; retry in 5 s"
    )
    assert messages.describe_api_error(ApiUnreachable(url, "refused"), url).startswith(
        f"cannot reach the darkroom API at {url}; is it running?"
    )
    assert messages.describe_api_error(ApiError(404, "no such job"), url) == (
        "the API refused the request (HTTP 404): no such job"
    )
    assert messages.escape_markdown("*bold* [x]") == r"\*bold\* \[x\]"


def test_the_priority_select_starts_at_normal_where_offered() -> None:
    assert form.default_priority_index(("high", "normal", "low")) == 1
    assert form.default_priority_index(("normal", "low")) == 0
    assert form.default_priority_index(("low",)) == 0


def test_the_sampler_and_schedule_selects_come_from_get_models() -> None:
    # An older API lists neither: nothing to pick, nothing sent.
    assert (SD_LIMITS.samplers, SD_LIMITS.default_sampler) == ((), None)
    assert form.sampler_options(SD_LIMITS) == form.schedule_options(SD_LIMITS) == []
    listed = {
        **SD_INFO,
        "samplers": ["Euler", "Euler a", "DDIM"],
        "schedulers": ["Automatic", "Karras", "SGM Uniform"],
        "default_sampler": None,
    }
    model = form.ModelLimits.from_api("sd", listed)
    assert form.sampler_options(model) == ["model default", "Euler", "Euler a", "DDIM"]
    assert form.schedule_options(model) == ["Automatic", "Karras", "SGM Uniform"]
    # The registry's default sampler leads (and is not listed twice).
    with_default = form.ModelLimits.from_api("sd", {**listed, "default_sampler": "Euler a"})
    assert form.sampler_options(with_default) == ["Euler a", "Euler", "DDIM"]

    picked = form.FormValues(prompt="p", sampler="DDIM", scheduler="SGM Uniform")
    body = form.request_body(model, picked)
    assert (body["sampler"], body["scheduler"]) == ("DDIM", "SGM Uniform")
    assert "sampler" not in form.request_body(model, form.FormValues(prompt="p"))
    assert "scheduler" not in form.request_body(model, form.FormValues(prompt="p"))


def test_rerun_body_keeps_the_sampler_and_schedule() -> None:
    params = {**TXT2IMG_PARAMS, "sampler": "DPM++ 2M", "scheduler": "exponential"}
    body = form.rerun_body({"model": "tiny-sd", "params": params})
    assert body is not None
    assert (body["sampler"], body["scheduler"]) == ("DPM++ 2M", "exponential")
    plain = form.rerun_body({"model": "tiny-sd", "params": {**params, "sampler": None}})
    assert plain is not None
    assert "sampler" not in plain


def test_the_hires_fix_is_sent_for_text_to_image_only_and_tiling_when_on() -> None:
    hires = form.HiresValues(scale=2.0, strength=0.7, upscaler="Latent")
    body = form.request_body(SD_LIMITS, form.FormValues(prompt="p", hires=hires, tiling=True))
    assert body["hires"] == {"scale": 2.0, "strength": 0.7, "upscaler": "Latent"}
    assert body["tiling"] is True
    with_steps = form.HiresValues(scale=1.5, strength=0.5, upscaler="Lanczos", steps=4)
    sent = form.request_body(SD_LIMITS, form.FormValues(prompt="p", hires=with_steps))["hires"]
    assert sent == {"scale": 1.5, "strength": 0.5, "upscaler": "Lanczos", "steps": 4}
    # With an init image, or on a model without image-to-image (its second pass): none.
    image_job = form.FormValues(prompt="p", hires=hires, init_image=b"\x89PNG")
    assert "hires" not in form.request_body(SD_LIMITS, image_job)
    text_only = form.ModelLimits.from_api("t", {**SD_INFO, "supports_i2i": False})
    assert "hires" not in form.request_body(text_only, form.FormValues(prompt="p", hires=hires))
    assert "tiling" not in form.request_body(SD_LIMITS, form.FormValues(prompt="p"))


def test_latent_upscalers_are_offered_for_sd_and_sdxl_only() -> None:
    def upscalers(model_type: str) -> list[str]:
        return form.upscalers_for(form.ModelLimits.from_api("m", {**SD_INFO, "type": model_type}))

    latent_then_image = [*api_hires.LATENT_UPSCALERS, "Lanczos", "Nearest"]
    assert upscalers("sd") == upscalers("sdxl") == latent_then_image
    assert upscalers("flux") == upscalers("sd3") == ["Lanczos", "Nearest"]
    # The page's copy of the API's names (it reaches the API over HTTP only).
    assert tuple(api_hires.LATENT_UPSCALERS) == form.LATENT_UPSCALERS
    assert form.LATENT_TYPES == api_hires.LATENT_TYPES
    assert set(form.IMAGE_UPSCALERS) <= set(api_hires.IMAGE_UPSCALERS)
    assert (form.DEFAULT_HIRES_SCALE, form.DEFAULT_HIRES_STRENGTH, form.MAX_HIRES_SCALE) == (
        api_hires.DEFAULT_SCALE,
        api_hires.DEFAULT_STRENGTH,
        api_hires.MAX_SCALE,
    )


def test_rerun_body_keeps_the_hires_fix_and_tiling() -> None:
    plan = {"width": 128, "height": 96, "steps": 3, "strength": 0.6, "upscaler": "Nearest"}
    params = {**TXT2IMG_PARAMS, "hires": plan, "tiling": True}
    body = form.rerun_body({"model": "tiny-sd", "params": params})
    assert body is not None
    assert (body["hires"], body["tiling"]) == (plan, True)
    plain = form.rerun_body({"model": "tiny-sd", "params": {**TXT2IMG_PARAMS, "hires": None}})
    assert plain is not None
    assert "hires" not in plain
    assert "tiling" not in plain


def test_progress_and_parameters_count_the_hires_pass() -> None:
    plan = {"width": 128, "height": 128, "steps": 10, "strength": 0.5, "upscaler": "Latent"}
    params = {"steps": 20, "mode": "txt2img", "hires": plan}
    assert progress.total_steps(params) == 25  # 20, then int(10 x 0.5)
    assert progress.total_steps({"steps": 20, "mode": "inpaint", "strength": 0.75}) == 15
    extras = {"sampler": "DPM++ 2M", "scheduler": "karras", "hires": plan, "tiling": True}
    job = {"model": "tiny-sd", "params": {**TXT2IMG_PARAMS, **extras}}
    assert messages.params_line(job).endswith(
        " · DPM++ 2M · karras schedule · hires fix to 128x128 (Latent) · tiling"
    )


def test_strokes_on_the_canvas_become_a_mask_at_the_images_own_size() -> None:
    # A 400x300 canvas over a 64x48 image, a stroke across its top-left quarter
    # with a soft edge (alpha 40), the rest transparent.
    strokes = np.zeros((300, 400, 4), np.uint8)
    strokes[0:150, 0:200] = (255, 0, 255, 128)
    strokes[150, 0:200, 3] = 40
    png = mask.mask_from_strokes(strokes, (64, 48))
    assert png is not None
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.mode, image.size) == ("PNG", "L", (64, 48))
    pixels = np.asarray(image)
    assert set(np.unique(pixels)) == {0, 255}  # white repaints, black keeps: nothing between
    assert (pixels[:24, :32] == 255).all()
    assert (pixels[25:, :] == 0).all()
    assert (pixels[:, 33:] == 0).all()
    # Nothing painted (or nothing returned yet): no mask, image-to-image.
    assert mask.mask_from_strokes(np.zeros((300, 400, 4), np.uint8), (64, 48)) is None
    assert mask.mask_from_strokes(None, (64, 48)) is None


def test_the_canvas_keeps_the_images_aspect_ratio_at_a_paintable_size() -> None:
    assert mask.canvas_size((64, 64)) == (mask.CANVAS_PX, mask.CANVAS_PX)
    assert mask.canvas_size((2048, 1024)) == (mask.CANVAS_PX, mask.CANVAS_PX // 2)
    assert mask.canvas_size((48, 64), longer_side=100) == (75, 100)


def test_a_mask_is_sent_with_its_image_on_models_that_inpaint() -> None:
    inpainting = form.ModelLimits.from_api("sd", {**SD_INFO, "supports_inpainting": True})
    values = form.FormValues(prompt="p", init_image=b"\x89PNG", strength=0.6, mask_image=b"\x89M")
    body = form.request_body(inpainting, values)
    assert (body["init_image"], body["mask_image"], body["strength"]) == ("iVBORw==", "iU0=", 0.6)
    # A model that does image-to-image but does not inpaint: the image alone.
    assert "mask_image" not in form.request_body(SD_LIMITS, values)
    # No image: no mask either.
    no_image = form.FormValues(prompt="p", mask_image=b"\x89M")
    assert "mask_image" not in form.request_body(inpainting, no_image)


def test_rerun_body_refuses_an_inpainting_job_as_it_does_image_to_image() -> None:
    job = {"model": "tiny-sd", "params": {**TXT2IMG_PARAMS, "mode": "inpaint", "strength": 1.0}}
    assert form.rerun_body(job) is None
