"""AUTOMATIC1111 1.6+'s samplers and schedules, hires fix, tiling, the fields darkroom
ignores (named, never silently) and /options per key: through the real `webuiapi`
client, or the exact request a named client sends, against a real stack (the API over
HTTP, real Celery workers, S3 over moto)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
import webuiapi

from tests.e2e.test_a1111_api import ON_TINY_SD, TINY, jobs_with, marker
from tests.support.e2e_fixtures import api_with_keys
from tests.support.processes import ApiProcess

KEY_A = "a1111-fidelity-key-a-0123456789"
KEY_B = "a1111-fidelity-key-b-0123456789"


@pytest.fixture(scope="module")
def two_keys_api(
    e2e_env: dict[str, str], workers: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    with api_with_keys(e2e_env, tmp_path_factory, KEY_A, KEY_B) as server:
        yield server


def the_job(api: ApiProcess, result: webuiapi.WebUIApiResult) -> dict[str, object]:
    [job_id] = result.info["job_ids"]
    response = httpx.get(f"{api.url}/jobs/{job_id}", timeout=10)
    response.raise_for_status()
    job: dict[str, object] = response.json()
    return job


# --- samplers and schedules ---------------------------------------------------------------


def test_the_samplers_and_schedules_of_a1111_16(
    webui: webuiapi.WebUIApi, api_server: ApiProcess
) -> None:
    assert {"DPM++ 3M SDE", "DPM++ 2M SDE Heun", "LCM"} <= set(webui.util_get_sampler_names())
    listed = {item["label"]: item for item in webui.get_schedulers()}
    assert {"Automatic", "Karras", "Exponential", "SGM Uniform", "Simple", "Beta"} <= set(listed)
    assert listed["SGM Uniform"]["name"] == "sgm_uniform"

    result = webui.txt2img(
        prompt=marker("3m sde"), sampler_name="DPM++ 3M SDE", scheduler="Exponential", **TINY
    )
    params = the_job(api_server, result)["params"]
    assert (params["sampler"], params["scheduler"]) == ("DPM++ 3M SDE", "exponential")
    assert result.info["sampler_name"] == "DPM++ 3M SDE"

    sgm = webui.txt2img(prompt=marker("sgm"), sampler_name="Euler", scheduler="SGM Uniform", **TINY)
    assert the_job(api_server, sgm)["params"]["scheduler"] == "sgm_uniform"


@pytest.mark.parametrize(
    ("fields", "named"),
    [({"sampler_name": "Restart"}, "Restart"), ({"scheduler": "Align Your Steps"}, "Align")],
)
def test_what_diffusers_cannot_express_is_refused_by_name(
    webui: webuiapi.WebUIApi, fields: dict[str, str], named: str
) -> None:
    with pytest.raises(RuntimeError) as caught:
        webui.txt2img(prompt=marker("refused"), **{**TINY, **fields})
    status, text = caught.value.args
    assert status == 422
    assert named in text
    assert "no diffusers counterpart" in text


def test_a_schedule_a_timestep_sampler_cannot_take_is_named_not_refused(
    webui: webuiapi.WebUIApi, api_server: ApiProcess
) -> None:
    # A1111 runs DDIM on its own schedule whatever `scheduler` says: so does darkroom,
    # and says so.
    result = webui.txt2img(prompt=marker("ddim"), sampler_name="DDIM", scheduler="Karras", **TINY)
    assert the_job(api_server, result)["params"]["scheduler"] is None
    assert result.info["darkroom_ignored"] == ["scheduler: Karras does not apply to DDIM"]


# --- hires fix and tiling -----------------------------------------------------------------


def test_hires_fix_answers_the_upscaled_image_as_one_job(
    webui: webuiapi.WebUIApi, api_server: ApiProcess
) -> None:
    prompt = marker("hires")
    result = webui.txt2img(
        prompt=prompt,
        batch_size=2,
        enable_hr=True,
        hr_scale=2,
        hr_upscaler="Latent",
        hr_second_pass_steps=1,
        denoising_strength=0.5,
        **TINY,
        **ON_TINY_SD,
    )
    assert [image.size for image in result.images] == [(128, 128)] * 2
    [job] = jobs_with(api_server.url, prompt)
    assert job["status"] == "succeeded"
    assert job["params"]["hires"] == {
        "width": 128,
        "height": 128,
        "steps": 1,
        "strength": 0.5,
        "upscaler": "Latent",
    }
    assert result.info["darkroom_ignored"] == []


def test_hires_to_a_size_with_an_image_upscaler(
    webui: webuiapi.WebUIApi, api_server: ApiProcess
) -> None:
    result = webui.txt2img(
        prompt=marker("hires size"),
        enable_hr=True,
        hr_resize_x=96,
        hr_resize_y=80,
        hr_upscaler="Lanczos",
        **TINY,
        **ON_TINY_SD,
    )
    [image] = result.images
    assert image.size == (96, 80)


def test_an_upscaler_model_darkroom_lacks_is_named_and_lanczos_used(
    api_server: ApiProcess,
) -> None:
    # SillyTavern's request with hires on and an ESRGAN upscaler (its defaults).
    body = {
        "prompt": marker("esrgan"),
        "negative_prompt": "",
        "sampler_name": "Euler",
        "steps": 2,
        "cfg_scale": 7,
        "width": 64,
        "height": 64,
        "restore_faces": False,
        "enable_hr": True,
        "hr_scale": 1.5,
        "hr_upscaler": "R-ESRGAN 4x+",
        "denoising_strength": 0.7,
        "seed": -1,
        "override_settings": {"sd_model_checkpoint": "tiny-sd"},
        "override_settings_restore_afterwards": True,
    }
    response = httpx.post(f"{api_server.url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert response.status_code == 200, response.text
    info = json.loads(response.json()["info"])
    assert info["darkroom_ignored"] == [
        "hr_upscaler: R-ESRGAN 4x+ is not available here; Lanczos used"
    ]
    assert response.headers["Darkroom-Ignored"] == "hr_upscaler"
    [job_id] = info["job_ids"]
    job = httpx.get(f"{api_server.url}/jobs/{job_id}", timeout=10).json()
    assert job["params"]["hires"]["upscaler"] == "Lanczos"
    assert (job["params"]["hires"]["width"], job["params"]["hires"]["height"]) == (96, 96)


def test_tiling_reaches_the_job(webui: webuiapi.WebUIApi, api_server: ApiProcess) -> None:
    result = webui.txt2img(prompt=marker("tiling"), tiling=True, **TINY)
    assert the_job(api_server, result)["params"]["tiling"] is True


# --- what is ignored is named -------------------------------------------------------------


def test_webuiapis_defaults_name_nothing(webui: webuiapi.WebUIApi) -> None:
    # webuiapi sends every field, at A1111's neutral values: none is named.
    result = webui.txt2img(prompt=marker("defaults"), **TINY)
    assert result.info["darkroom_ignored"] == []


def test_fields_set_and_ignored_are_named_in_info_and_the_header(api_server: ApiProcess) -> None:
    body = {
        "prompt": marker("ignored"),
        **TINY,
        "restore_faces": True,
        "styles": ["cinematic"],
        "subseed_strength": 0.3,
        "script_name": "SD upscale",
        "script_args": [None, 64, 1, 2],
        "override_settings": {"CLIP_stop_at_last_layers": 2},
    }
    response = httpx.post(f"{api_server.url}/sdapi/v1/txt2img", json=body, timeout=120)
    assert response.status_code == 200, response.text
    ignored = json.loads(response.json()["info"])["darkroom_ignored"]
    assert ignored == [
        "restore_faces",
        "styles",
        "subseed_strength",
        "script_name",
        "script_args",
        "override_settings.CLIP_stop_at_last_layers",
    ]
    assert response.headers["Darkroom-Ignored"] == ", ".join(ignored)


# --- /options, kept per key ---------------------------------------------------------------


def test_a1111s_own_options_write_test(api_server: ApiProcess) -> None:
    # AUTOMATIC1111's test/test_utils.py::test_options_write, as it is.
    url_options = f"{api_server.url}/sdapi/v1/options"
    response = httpx.get(url_options)
    assert response.status_code == 200
    pre_value = response.json()["send_seed"]
    assert httpx.post(url_options, json={"send_seed": (not pre_value)}).status_code == 200
    response = httpx.get(url_options)
    assert response.status_code == 200
    assert response.json()["send_seed"] == (not pre_value)
    httpx.post(url_options, json={"send_seed": pre_value})


def test_options_are_kept_per_key_and_bounded(two_keys_api: ApiProcess) -> None:
    a = webuiapi.WebUIApi(baseurl=f"{two_keys_api.url}/sdapi/v1")
    a.set_auth("openwebui", KEY_A)  # HTTP Basic, as Open WebUI logs in
    b = webuiapi.WebUIApi(baseurl=f"{two_keys_api.url}/sdapi/v1")
    b.set_auth("sillytavern", KEY_B)

    a.set_options({"samples_format": "jpg", "my_client_setting": {"theme": "dark"}})
    assert a.get_options()["samples_format"] == "jpg"
    assert a.get_options()["my_client_setting"] == {"theme": "dark"}
    assert b.get_options()["samples_format"] == "png"  # A1111's default: A's is A's
    assert "my_client_setting" not in b.get_options()

    too_big = a.set_options({"huge": "x" * 5000})
    assert too_big["error"] == "InvalidRequest"
    assert "4096 bytes" in too_big["detail"]
    too_many = a.set_options({f"option_{i}": i for i in range(101)})
    assert "at most 100 options" in too_many["detail"]
    assert "option_0" not in a.get_options()  # all or none


def test_an_empty_prompt_generates_as_in_a1111(
    webui: webuiapi.WebUIApi, api_server: ApiProcess
) -> None:
    result = webui.txt2img(prompt="", seed=77, **TINY)
    [image] = result.images
    assert image.size == (64, 64)
    job = the_job(api_server, result)
    assert (job["status"], job["params"]["prompt"], job["params"]["seed"]) == ("succeeded", "", 77)
    # darkroom's own API still refuses one: there, an empty prompt is a mistake.
    refused = httpx.post(f"{api_server.url}/jobs", json={"prompt": ""}, timeout=10)
    assert refused.status_code == 422
