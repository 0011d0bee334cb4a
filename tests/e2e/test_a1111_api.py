"""AUTOMATIC1111's API (/sdapi/v1) through the real `webuiapi` client, unchanged, against a
real stack: the API over HTTP, real Celery workers, S3 over moto. Every call is one or
more ordinary jobs of the caller, listed in GET /jobs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import webuiapi
from PIL import Image

from darkroom.stack import free_port
from shared.registry import Registry
from tests.e2e.helpers import download_png
from tests.support.polling import wait_until
from tests.support.processes import ApiProcess, start_api

KEY = "a1111-test-key-0123456789abcdef"
SIZE = (64, 64)
# What every call sends: tiny images (webuiapi's defaults are 512x512).
TINY = {"width": SIZE[0], "height": SIZE[1], "steps": 2}
# A call naming no model runs on any free worker, as darkroom's own jobs do; image
# inputs need tiny-sd (the flaky model takes none).
ON_TINY_SD = {"override_settings": {"sd_model_checkpoint": "tiny-sd"}}


@pytest.fixture(scope="module")
def keyed_api(
    e2e_env: dict[str, str], workers: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """An API with a key and a one-second compat wait."""
    env = {**e2e_env, "API_KEYS": KEY, "COMPAT_WAIT_S": "1"}
    server = start_api(env, tmp_path_factory.mktemp("a1111-keyed") / "api.log", free_port())
    yield server
    server.stop()


def keyed_webui(api: ApiProcess, key: str | None) -> webuiapi.WebUIApi:
    """webuiapi sends Basic auth only; darkroom's key goes in the session's header."""
    client = webuiapi.WebUIApi(baseurl=f"{api.url}/sdapi/v1", sampler="Euler", steps=2)
    if key is not None:
        client.session.headers["Authorization"] = f"Bearer {key}"
    return client


def marker(tag: str) -> str:
    return f"a1111 {tag} {uuid.uuid4().hex[:8]}"


def jobs_with(api_url: str, prompt: str, key: str | None = None) -> list[dict[str, Any]]:
    """The caller's jobs of that prompt, oldest first, as darkroom's own API lists them."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{api_url}/jobs", params={"limit": 100}, headers=headers, timeout=10)
    response.raise_for_status()
    return [job for job in reversed(response.json()["jobs"]) if job["params"]["prompt"] == prompt]


def pattern() -> Image.Image:
    """A deterministic RGB gradient: every pixel differs from its neighbours."""
    image = Image.new("RGB", SIZE)
    image.putdata(
        [
            (x * 4 % 256, y * 4 % 256, (x + y) * 2 % 256)
            for y in range(SIZE[1])
            for x in range(SIZE[0])
        ]
    )
    return image


# --- txt2img ------------------------------------------------------------------------------


def test_txt2img_with_batch_size(webui: webuiapi.WebUIApi, api_server: ApiProcess) -> None:
    prompt = marker("batch")
    result = webui.txt2img(prompt=prompt, batch_size=2, seed=100, **TINY)

    assert len(result.images) == 2
    assert {image.size for image in result.images} == {SIZE}
    info = result.info
    assert (info["seed"], info["all_seeds"]) == (100, [100, 101])
    assert info["prompt"] == prompt
    assert info["sampler_name"] == "Euler"
    assert (info["width"], info["height"], info["steps"]) == (64, 64, 2)
    assert result.parameters["batch_size"] == 2  # the request, echoed
    [job] = jobs_with(api_server.url, prompt)
    assert job["status"] == "succeeded"
    assert (job["params"]["num_images"], job["params"]["seed"]) == (2, 100)
    assert info["job_ids"] == [job["id"]]


def test_more_images_than_a_job_holds_take_several_jobs(
    webui: webuiapi.WebUIApi, api_server: ApiProcess
) -> None:
    prompt = marker("n_iter")
    result = webui.txt2img(prompt=prompt, batch_size=3, n_iter=2, seed=500, **TINY)

    assert len(result.images) == 6
    assert result.info["all_seeds"] == [500, 501, 502, 503, 504, 505]
    jobs = jobs_with(api_server.url, prompt)
    assert [(job["params"]["seed"], job["params"]["num_images"]) for job in jobs] == [
        (500, 4),
        (504, 2),
    ]
    assert sorted(result.info["job_ids"]) == sorted(job["id"] for job in jobs)


def test_seed_minus_one_is_random_and_reported(webui: webuiapi.WebUIApi) -> None:
    result = webui.txt2img(prompt=marker("random"), batch_size=2, seed=-1, **TINY)

    seed = result.info["seed"]
    assert seed >= 0
    assert result.info["all_seeds"] == [seed, seed + 1]


def test_more_images_than_a_call_allows_is_refused(webui: webuiapi.WebUIApi) -> None:
    with pytest.raises(RuntimeError) as caught:
        webui.txt2img(prompt=marker("too many"), batch_size=8, n_iter=9, **TINY)
    status, text = caught.value.args
    assert status == 422
    assert "at most 64" in text
    # A1111's own page limits: batch_size 8, n_iter 100.
    with pytest.raises(RuntimeError) as caught:
        webui.txt2img(prompt=marker("too wide"), batch_size=9, **TINY)
    assert caught.value.args[0] == 422


def test_a_size_off_the_grid_is_rounded_down_as_a1111_does(
    webui: webuiapi.WebUIApi, api_server: ApiProcess
) -> None:
    prompt = marker("round")
    result = webui.txt2img(prompt=prompt, width=70, height=63, steps=2)
    assert [image.size for image in result.images] == [(64, 56)]
    [job] = jobs_with(api_server.url, prompt)
    assert (job["params"]["width"], job["params"]["height"]) == (64, 56)


# --- img2img ------------------------------------------------------------------------------


def test_img2img(webui: webuiapi.WebUIApi, api_server: ApiProcess) -> None:
    prompt = marker("img2img")
    result = webui.img2img(
        images=[pattern()], prompt=prompt, denoising_strength=0.6, seed=3, **TINY, **ON_TINY_SD
    )

    [image] = result.images
    assert image.size == SIZE
    assert result.parameters["init_images"] is None  # not echoed (include_init_images)
    [job] = jobs_with(api_server.url, prompt)
    assert (job["params"]["mode"], job["params"]["strength"]) == ("img2img", 0.6)
    assert result.info["denoising_strength"] == 0.6


@pytest.mark.parametrize("invert", [0, 1])
def test_img2img_with_a_mask_repaints_only_the_masked_pixels(
    webui: webuiapi.WebUIApi, api_server: ApiProcess, invert: int
) -> None:
    # White repaints; inpainting_mask_invert=1 flips it. Either way: the left half.
    repaint, keep = (255, 0) if not invert else (0, 255)
    mask = Image.new("L", SIZE, keep)
    mask.paste(repaint, (0, 0, SIZE[0] // 2, SIZE[1]))
    source = pattern()
    prompt = marker(f"inpaint {invert}")

    result = webui.img2img(
        images=[source],
        mask_image=mask,
        inpainting_mask_invert=invert,
        prompt=prompt,
        seed=5,
        **TINY,
        **ON_TINY_SD,
    )

    [edited] = result.images
    edited = edited.convert("RGB")
    right = (SIZE[0] // 2, 0, SIZE[0], SIZE[1])
    left = (0, 0, SIZE[0] // 2, SIZE[1])
    assert edited.crop(right).tobytes() == source.crop(right).tobytes()
    assert edited.crop(left).tobytes() != source.crop(left).tobytes()
    [job] = jobs_with(api_server.url, prompt)
    assert job["params"]["mode"] == "inpaint"
    assert result.info["is_using_inpainting_conditioning"] is True


# --- models and samplers ------------------------------------------------------------------


def test_models_by_their_a1111_titles(
    webui: webuiapi.WebUIApi, api_server: ApiProcess, registry: Registry
) -> None:
    # The checkpoints the session's workers can run (tiny-sd, tiny-flaky), no others.
    models = webui.get_sd_models()
    assert [model["model_name"] for model in models] == [
        m for m in registry.models if m in {"tiny-sd", "tiny-flaky"}
    ]
    titles = {model["model_name"]: model["title"] for model in models}
    assert titles["tiny-flaky"].startswith("tiny-flaky [")
    try:
        webui.util_set_model("tiny-flaky")  # finds the closest title, POSTs it to options
        assert webui.util_get_current_model() == titles["tiny-flaky"]
        prompt = marker("chosen model")
        chosen = webui.txt2img(prompt=prompt, **TINY)
        # override_settings names a model for one call, by registry name or title.
        overridden = webui.txt2img(
            prompt=prompt, override_settings={"sd_model_checkpoint": "tiny-sd"}, **TINY
        )
    finally:
        webui.set_options({"sd_model_checkpoint": titles["tiny-sd"]})

    assert chosen.info["sd_model_name"] == "tiny-flaky"
    assert overridden.info["sd_model_name"] == "tiny-sd"
    assert [job["model"] for job in jobs_with(api_server.url, prompt)] == ["tiny-flaky", "tiny-sd"]
    assert webui.util_get_current_model() == titles["tiny-sd"]


def test_an_unknown_model_is_refused(webui: webuiapi.WebUIApi) -> None:
    answer = webui.set_options({"sd_model_checkpoint": "v1-5-pruned-emaonly.safetensors"})
    assert answer["error"] == "UnknownModel"
    assert set(answer) == {"error", "detail", "body", "errors"}
    assert webui.get_options()["sd_model_checkpoint"].startswith("tiny-sd [")

    with pytest.raises(RuntimeError) as caught:
        webui.txt2img(
            prompt=marker("unknown"), override_settings={"sd_model_checkpoint": "nope"}, **TINY
        )
    assert caught.value.args[0] == 404


def test_samplers_by_their_a1111_names(webui: webuiapi.WebUIApi, api_server: ApiProcess) -> None:
    names = webui.util_get_sampler_names()
    assert {"Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM"} <= set(names)
    prompt = marker("sampler")

    # A1111's newer form: the sampler, and a Karras schedule as its own field.
    result = webui.txt2img(prompt=prompt, sampler_name="DPM++ 2M", scheduler="Karras", **TINY)

    assert result.info["sampler_name"] == "DPM++ 2M Karras"
    [job] = jobs_with(api_server.url, prompt)
    assert job["params"]["sampler"] == "DPM++ 2M Karras"
    with pytest.raises(RuntimeError) as caught:
        webui.txt2img(prompt=marker("no sampler"), sampler_name="Nonesuch", **TINY)
    status, text = caught.value.args
    assert 400 <= status < 500
    assert "Euler a" in text  # the refusal lists the known names


# --- progress, interrupt, timeouts and keys -----------------------------------------------


def test_progress_and_interrupt_of_the_callers_running_job(
    webui: webuiapi.WebUIApi, api_server: ApiProcess
) -> None:
    prompt = f"slow {marker('interrupt')}"  # 0.2 s a step on the flaky model
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(
            webui.txt2img,
            prompt=prompt,
            override_settings={"sd_model_checkpoint": "tiny-flaky"},
            width=64,
            height=64,
            steps=40,
        )
        running = wait_until(
            lambda: (p := webui.get_progress())["state"]["sampling_step"] >= 1 and p
        )
        assert 0 < running["progress"] < 1
        state = running["state"]
        assert state["sampling_steps"] == 40
        assert state["job_count"] >= 1
        assert running["eta_relative"] > 0

        assert webui.interrupt() == {}
        result = call.result(timeout=60)

    # As A1111: an interrupted call answers, with the images finished before (none).
    assert result.images == []
    [job] = jobs_with(api_server.url, prompt)
    assert (state["job"], result.info["job_ids"]) == (job["id"], [job["id"]])
    assert job["status"] == "canceled"
    # Nothing of the caller's left: what webuiapi's util_wait_for_ready waits for.
    idle = wait_until(lambda: (p := webui.get_progress())["state"]["job_count"] == 0 and p)
    assert (idle["progress"], idle["state"]["job"]) == (0, "")


def test_a_wait_past_compat_wait_s_is_an_error_naming_the_running_job(
    keyed_api: ApiProcess,
) -> None:
    prompt = f"slow {marker('timeout')}"  # 20 steps of 0.2 s: longer than the 1 s wait
    webui = keyed_webui(keyed_api, KEY)
    with pytest.raises(RuntimeError) as caught:
        webui.txt2img(
            prompt=prompt,
            override_settings={"sd_model_checkpoint": "tiny-flaky"},
            width=64,
            height=64,
            steps=20,
        )

    status, text = caught.value.args
    [job] = jobs_with(keyed_api.url, prompt, KEY)
    assert status == 504
    assert job["id"] in text
    assert job["status"] in {"queued", "running"}  # it keeps going
    canceled = httpx.post(
        f"{keyed_api.url}/jobs/{job['id']}/cancel", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert canceled.status_code in {200, 202}


def test_a_keyed_api_needs_the_key_as_a_bearer_token(keyed_api: ApiProcess) -> None:
    with pytest.raises(RuntimeError) as caught:
        keyed_webui(keyed_api, None).txt2img(prompt=marker("no key"), **TINY)
    status, text = caught.value.args
    assert status == 401
    assert '"error":"Unauthorized"' in text

    titles = keyed_webui(keyed_api, KEY).util_get_model_names()
    assert any(title.startswith("tiny-sd [") for title in titles)


def test_a1111_clients_log_in_with_http_basic_the_key_as_password(keyed_api: ApiProcess) -> None:
    # webuiapi's set_auth, Open WebUI and SillyTavern: Authorization: Basic user:password.
    webui = keyed_webui(keyed_api, None)
    webui.set_auth("anyone", KEY)
    assert any(title.startswith("tiny-sd [") for title in webui.util_get_model_names())
    webui.set_auth("anyone", "not-a-key")
    assert webui.session.get(f"{webui.baseurl}/sd-models").status_code == 401
    # Basic is A1111's: darkroom's own API still wants the Bearer token.
    own = httpx.get(f"{keyed_api.url}/jobs", auth=("anyone", KEY))
    assert own.status_code == 401
    assert "Bearer" in own.json()["error"]["message"]


def test_the_start_up_inventory_answers_what_darkroom_has(webui: webuiapi.WebUIApi) -> None:
    for listing in (
        webui.get_sd_vae,
        webui.get_hypernetworks,
        webui.get_face_restorers,
        webui.get_realesrgan_models,
        webui.get_prompt_styles,
    ):
        assert listing() == [], listing.__name__
    # The hires fix's (hr_upscaler).
    assert [mode["name"] for mode in webui.get_latent_upscale_modes()][:2] == [
        "Latent",
        "Latent (antialiased)",
    ]
    # The upscalers of Extras: those that need no weights.
    assert [item["name"] for item in webui.get_upscalers()] == ["None", "Lanczos", "Nearest"]
    assert webui.get_embeddings() == {"loaded": {}, "skipped": {}}
    assert webui.get_cmd_flags()["api"] is True
    ram = webui.get_memory()["ram"]
    assert 0 < ram["free"] <= ram["total"]
    assert ram["used"] == ram["total"] - ram["free"]
    assert "error" in webui.get_memory()["cuda"]
    webui.refresh_checkpoints()
    modules = httpx.get(f"{webui.baseurl}/sd-modules", timeout=10)
    assert (modules.status_code, modules.json()) == (200, [])


def test_skip_stops_the_current_job_and_the_call_runs_on(
    webui: webuiapi.WebUIApi, api_server: ApiProcess
) -> None:
    prompt = f"slow {marker('skip')}"  # 0.2 s a step on the flaky model
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(
            webui.txt2img,
            prompt=prompt,
            override_settings={"sd_model_checkpoint": "tiny-flaky"},
            width=64,
            height=64,
            steps=10,
            batch_size=4,
            n_iter=2,  # 8 images: two jobs of four
        )
        wait_until(lambda: webui.get_progress()["state"]["sampling_step"] >= 1)
        first = webui.get_progress()["state"]["job"]
        webui.skip()
        result = call.result(timeout=120)

    jobs = {job["id"]: job for job in jobs_with(api_server.url, prompt)}
    assert jobs[first]["status"] == "canceled"
    [other] = [job for job_id, job in jobs.items() if job_id != first]
    assert other["status"] == "succeeded"
    assert len(result.images) == 4  # the second job's, as A1111 skips one image


# --- the parameters travel with the image ------------------------------------------------


def text_of(image: Image.Image) -> dict[str, str]:
    """An image's PNG text chunks, as any PNG reader finds them."""
    return dict(getattr(image, "text", {}))


def test_the_images_carry_their_parameters(
    webui: webuiapi.WebUIApi, api_server: ApiProcess
) -> None:
    prompt = marker("png metadata")
    result = webui.txt2img(
        prompt=prompt, seed=300, batch_size=2, sampler_name="Euler a", **TINY, **ON_TINY_SD
    )

    for index, image in enumerate(result.images):
        chunks = text_of(image)
        # The text the call answered in info.infotexts, in A1111's form.
        assert chunks["parameters"] == result.info["infotexts"][index]
        parsed = webui.png_info(image).parameters  # A1111's own endpoint reads it back
        assert parsed["Prompt"] == prompt
        assert parsed["Negative prompt"] == "blurry"  # tiny-sd's own
        assert (parsed["Seed"], parsed["Steps"]) == (str(300 + index), "2")
        assert (parsed["Size-1"], parsed["Size-2"]) == ("64", "64")
        assert parsed["Sampler"] == "Euler a"
        assert (parsed["Model"], parsed["Model hash"]) == ("tiny-sd", result.info["sd_model_hash"])
        darkroom = json.loads(chunks["darkroom"])
        assert darkroom["job_id"] in result.info["job_ids"]
        assert (darkroom["seed"], darkroom["model"], darkroom["prompt"]) == (
            300 + index,
            "tiny-sd",
            prompt,
        )


def test_png_info_answers_as_a1111s(webui: webuiapi.WebUIApi) -> None:
    result = webui.txt2img(prompt=marker("png info"), seed=9, **TINY, **ON_TINY_SD)
    [image] = result.images

    answer = webui.png_info(image)

    assert answer.info == text_of(image)["parameters"]  # the text, as sent
    assert answer.json["items"] == {"darkroom": text_of(image)["darkroom"]}
    assert answer.parameters["Clip skip"] == "1"  # A1111's defaults fill in the rest
    # An image with no parameters: an empty text, as A1111's.
    plain = webui.png_info(pattern())
    assert (plain.info, plain.json["items"], plain.parameters["Prompt"]) == ("", {}, "")
    bad = httpx.post(f"{webui.baseurl}/png-info", json={"image": "not an image"}, timeout=10)
    assert bad.status_code == 422
    assert bad.json()["error"] == "InvalidRequest"


def test_the_stored_image_of_the_job_carries_them_too(
    webui: webuiapi.WebUIApi, api_server: ApiProcess
) -> None:
    prompt = marker("stored")
    result = webui.txt2img(prompt=prompt, seed=11, **TINY, **ON_TINY_SD)
    [job] = jobs_with(api_server.url, prompt)

    # darkroom's own link (GET /jobs/{id}): the same stored PNG.
    _, stored = download_png(job["images"][0]["url"])
    assert text_of(stored) == text_of(result.images[0])
    assert json.loads(text_of(stored)["darkroom"])["job_id"] == job["id"]


# --- Extras: the weight-free upscalers, and what darkroom has no models for --------------


def test_extras_upscale_an_image_and_keep_its_parameters(webui: webuiapi.WebUIApi) -> None:
    [made] = webui.txt2img(prompt=marker("extras"), seed=21, **TINY, **ON_TINY_SD).images

    result = webui.extra_single_image(image=made, upscaler_1="Lanczos", upscaling_resize=2)

    assert result.image.size == (128, 128)
    chunks = text_of(result.image)
    assert chunks["parameters"] == text_of(made)["parameters"]  # still says how it was made
    assert chunks["postprocessing"] == "Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos"
    assert "Lanczos" in result.info  # A1111's html_info


def test_extras_batch_with_nearest(webui: webuiapi.WebUIApi) -> None:
    source = pattern()
    small = source.resize((32, 16))

    result = webui.extra_batch_images(
        images=[source, small], upscaler_1="Nearest", upscaling_resize=2
    )

    assert [image.size for image in result.images] == [(128, 128), (64, 32)]
    doubled = source.resize((128, 128), Image.Resampling.NEAREST)
    assert result.images[0].convert("RGB").tobytes() == doubled.tobytes()


def test_extras_refuse_what_darkroom_cannot_do(webui: webuiapi.WebUIApi) -> None:
    def refused(**options: Any) -> tuple[int, str]:
        with pytest.raises(RuntimeError) as caught:
            webui.extra_single_image(image=pattern(), **options)
        status, text = caught.value.args
        return status, text

    status, text = refused(upscaler_1="Lanczos", upscaling_resize=100)  # 6400x6400
    assert status == 422
    assert "6400x6400" in text
    assert "EXTRAS_MAX_PIXELS" in text
    status, text = refused(upscaler_1="R-ESRGAN 4x+")
    assert status == 422
    assert "R-ESRGAN 4x+" in text
    assert "Lanczos" in text  # what there is instead
    status, text = refused(upscaler_1="Lanczos", gfpgan_visibility=0.5)
    assert status == 422
    assert "face restoration (GFPGAN) is not available in darkroom" in text


def test_interrogation_is_refused_by_name(webui: webuiapi.WebUIApi) -> None:
    with pytest.raises(RuntimeError) as caught:
        webui.interrogate(pattern())
    status, text = caught.value.args
    assert status == 501
    assert "interrogation (CLIP, DeepBooru) is not available" in text
