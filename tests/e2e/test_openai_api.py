"""OpenAI's Images API (/v1) through the real `openai` SDK, unchanged, against a real stack:
the API over HTTP, real Celery workers, S3 over moto. Every call is an ordinary job
of the caller, listed in GET /jobs."""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

import httpx
import openai
import pytest
from PIL import Image

from darkroom.stack import free_port
from shared.registry import Registry
from tests.e2e.helpers import download_png
from tests.support.processes import ApiProcess, start_api

KEY_A = "openai-test-key-a-0123456789abcdef"
KEY_B = "openai-test-key-b-0123456789abcdef"
SIZE = (64, 64)


@pytest.fixture(scope="module")
def client(api_server: ApiProcess) -> Iterator[openai.OpenAI]:
    # max_retries=0: a refused call must surface at once, not after the SDK's retries.
    with openai.OpenAI(
        base_url=f"{api_server.url}/v1", api_key="not-checked", max_retries=0, timeout=120
    ) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def keyed_api(
    e2e_env: dict[str, str], workers: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    """An API with keys, a one-second compat wait and one job a minute per key."""
    env = {
        **e2e_env,
        "API_KEYS": f"{KEY_A},{KEY_B}",
        "COMPAT_WAIT_S": "1",
        "RATE_LIMIT_SUBMITS_PER_MINUTE": "1",
    }
    log = tmp_path_factory.mktemp("openai-keyed") / "api.log"
    server = start_api(env, log, free_port())
    yield server
    server.stop()


def keyed_client(api: ApiProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{api.url}/v1", api_key=key, max_retries=0, timeout=120)


def marker(tag: str) -> str:
    return f"openai {tag} {uuid.uuid4().hex[:8]}"


def jobs_with(api_url: str, prompt: str, key: str | None = None) -> list[dict[str, Any]]:
    """The caller's jobs of that prompt, oldest first, as darkroom's own API lists them."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{api_url}/jobs", params={"limit": 100}, headers=headers, timeout=10)
    response.raise_for_status()
    return [job for job in reversed(response.json()["jobs"]) if job["params"]["prompt"] == prompt]


def decode(b64_json: str | None) -> Image.Image:
    assert b64_json is not None
    image = Image.open(io.BytesIO(base64.b64decode(b64_json)))
    image.load()
    return image


def pattern_png(size: tuple[int, int] = SIZE) -> bytes:
    """A deterministic RGB gradient: every pixel differs from its neighbours."""
    image = Image.new("RGB", size)
    image.putdata(
        [
            (x * 4 % 256, y * 4 % 256, (x + y) * 2 % 256)
            for y in range(size[1])
            for x in range(size[0])
        ]
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


# --- generations --------------------------------------------------------------------------


def test_generate_two_images_as_b64_json(client: openai.OpenAI, api_server: ApiProcess) -> None:
    prompt = marker("b64")
    result = client.images.generate(
        model="tiny-sd", prompt=prompt, n=2, size="64x64", response_format="b64_json"
    )

    assert len(result.data or []) == 2
    for item in result.data or []:
        image = decode(item.b64_json)
        assert (image.format, image.size) == ("PNG", SIZE)
        assert item.url is None
        assert item.revised_prompt is None  # prompt optimisation is off
    [job] = jobs_with(api_server.url, prompt)
    assert job["status"] == "succeeded"
    assert (job["model"], job["params"]["num_images"], job["params"]["mode"]) == (
        "tiny-sd",
        2,
        "txt2img",
    )
    assert result.created == int(datetime.fromisoformat(job["finished_at"]).timestamp())


def test_generate_two_images_as_urls_of_the_stored_pngs(
    client: openai.OpenAI, api_server: ApiProcess
) -> None:
    prompt = marker("url")
    result = client.images.generate(
        model="tiny-sd", prompt=prompt, n=2, size="64x64", response_format="url"
    )

    urls = [item.url for item in result.data or []]
    assert len(urls) == 2
    [job] = jobs_with(api_server.url, prompt)
    # The job's own images (presigned links are signed afresh on each read).
    assert [urlparse(url).path for url in urls if url] == [
        urlparse(image["url"]).path for image in job["images"]
    ]
    for url in urls:
        assert url is not None
        _, image = download_png(url)
        assert (image.format, image.size) == ("PNG", SIZE)


@pytest.mark.parametrize(
    ("output_format", "response_format", "pillow_format"),
    [("jpeg", "b64_json", "JPEG"), ("webp", "url", "WEBP")],
)
def test_output_format_converts_the_stored_png(
    client: openai.OpenAI, output_format: str, response_format: str, pillow_format: str
) -> None:
    result = client.images.generate(
        model="tiny-sd",
        prompt=marker(output_format),
        size="64x64",
        output_format=output_format,  # type: ignore[arg-type]
        response_format=response_format,  # type: ignore[arg-type]
    )

    [item] = result.data or []
    if response_format == "url":
        # Made on the fly, stored nowhere: a data: URL.
        assert item.url is not None
        header, _, payload = item.url.partition(",")
        assert header == f"data:image/{output_format};base64"
        image = decode(payload)
    else:
        image = decode(item.b64_json)
    assert (image.format, image.size) == (pillow_format, SIZE)


def test_extra_body_seed_is_reproducible(client: openai.OpenAI, api_server: ApiProcess) -> None:
    prompt = marker("seed")

    def generate(seed: int) -> str | None:
        extra = {
            "seed": seed,
            "num_inference_steps": 2,
            "guidance_scale": 5.0,
            "negative_prompt": "dull",
        }
        result = client.images.generate(
            model="tiny-sd",
            prompt=prompt,
            size="64x64",
            response_format="b64_json",
            extra_body=extra,
        )
        return (result.data or [])[0].b64_json

    first, again, other = generate(4242), generate(4242), generate(4243)

    # The same pixels (each PNG names its own job in its `darkroom` text chunk).
    assert decode(first).tobytes() == decode(again).tobytes()
    assert decode(other).tobytes() != decode(first).tobytes()
    jobs = jobs_with(api_server.url, prompt)
    assert [job["params"]["seed"] for job in jobs] == [4242, 4242, 4243]
    for job in jobs:
        params = job["params"]
        assert (params["steps"], params["guidance_scale"], params["negative_prompt"]) == (
            2,
            5.0,
            "dull",
        )


def test_n_over_4_takes_a_job_per_4_images_with_seeds_following_on(
    client: openai.OpenAI, api_server: ApiProcess
) -> None:
    """No seed given: one random seed for the whole call, so image i still has seed + i."""
    prompt = marker("n=6")
    result = client.images.generate(
        model="tiny-sd", prompt=prompt, n=6, size="64x64", response_format="url"
    )

    urls = [item.url for item in result.data or []]
    jobs = jobs_with(api_server.url, prompt)
    assert [job["params"]["num_images"] for job in jobs] == [4, 2]
    assert {job["status"] for job in jobs} == {"succeeded"}
    first = jobs[0]["params"]["seed"]
    assert jobs[1]["params"]["seed"] == first + 4
    images = [image for job in jobs for image in job["images"]]
    assert [image["seed"] for image in images] == list(range(first, first + 6))
    # In the call's order: the first job's four, then the second's two.
    assert [urlparse(url or "").path for url in urls] == [
        urlparse(image["url"]).path for image in images
    ]
    last = max(datetime.fromisoformat(job["finished_at"]) for job in jobs)
    assert result.created == int(last.timestamp())


def test_a_seed_for_ten_images_is_each_jobs_first(
    client: openai.OpenAI, api_server: ApiProcess
) -> None:
    prompt = marker("n=10")
    result = client.images.generate(
        model="tiny-sd",
        prompt=prompt,
        n=10,
        size="64x64",
        response_format="b64_json",
        extra_body={"seed": 500, "num_inference_steps": 2},
    )

    assert [decode(item.b64_json).size for item in result.data or []] == [SIZE] * 10
    jobs = jobs_with(api_server.url, prompt)
    assert [(job["params"]["seed"], job["params"]["num_images"]) for job in jobs] == [
        (500, 4),
        (504, 4),
        (508, 2),
    ]


# --- edits --------------------------------------------------------------------------------


def test_edit_without_a_mask_is_image_to_image(
    client: openai.OpenAI, api_server: ApiProcess
) -> None:
    prompt = marker("img2img")
    result = client.images.edit(
        model="tiny-sd",
        image=("source.png", pattern_png(), "image/png"),
        prompt=prompt,
        response_format="b64_json",
        extra_body={"strength": 0.5, "seed": 7},
    )

    [item] = result.data or []
    assert decode(item.b64_json).size == SIZE
    [job] = jobs_with(api_server.url, prompt)
    assert (job["params"]["mode"], job["params"]["strength"], job["params"]["seed"]) == (
        "img2img",
        0.5,
        7,
    )


def test_edit_with_a_mask_repaints_only_its_transparent_pixels(
    client: openai.OpenAI, api_server: ApiProcess
) -> None:
    source = pattern_png()
    mask = Image.new("RGBA", SIZE, (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, SIZE[0] // 2, SIZE[1]))  # the left half: repaint
    mask_png = io.BytesIO()
    mask.save(mask_png, format="PNG")
    prompt = marker("inpaint")

    result = client.images.edit(
        model="tiny-sd",
        image=("source.png", source, "image/png"),
        mask=("mask.png", mask_png.getvalue(), "image/png"),
        prompt=prompt,
        response_format="b64_json",
        extra_body={"seed": 11},
    )

    [item] = result.data or []
    edited = decode(item.b64_json).convert("RGB")
    original = Image.open(io.BytesIO(source)).convert("RGB")
    assert edited.size == original.size
    right = (SIZE[0] // 2, 0, SIZE[0], SIZE[1])
    left = (0, 0, SIZE[0] // 2, SIZE[1])
    assert edited.crop(right).tobytes() == original.crop(right).tobytes()
    assert edited.crop(left).tobytes() != original.crop(left).tobytes()
    [job] = jobs_with(api_server.url, prompt)
    assert job["params"]["mode"] == "inpaint"


def test_a_mask_of_another_size_is_a_bad_request(client: openai.OpenAI) -> None:
    mask = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(
            model="tiny-sd",
            image=("source.png", pattern_png(), "image/png"),
            mask=("mask.png", out.getvalue(), "image/png"),
            prompt=marker("bad mask"),
        )
    assert caught.value.body["param"] == "mask"  # type: ignore[index]


# --- variations ---------------------------------------------------------------------------


def test_a_variation_is_image_to_image_of_the_image_with_an_empty_prompt(
    client: openai.OpenAI, api_server: ApiProcess
) -> None:
    source_size = (72, 48)  # not the model's default: the answer keeps the input's
    seed = uuid.uuid4().int % 1_000_000  # finds the call's job among the prompt-less ones
    result = client.images.create_variation(
        image=("source.png", pattern_png(source_size), "image/png"),
        model="tiny-sd",
        n=2,
        response_format="b64_json",
        extra_body={"seed": seed, "num_inference_steps": 2},
    )

    images = [decode(item.b64_json) for item in result.data or []]
    assert [(image.format, image.size) for image in images] == [("PNG", source_size)] * 2
    assert [item.revised_prompt for item in result.data or []] == [None, None]
    [job] = [j for j in jobs_with(api_server.url, "") if j["params"]["seed"] == seed]
    params = job["params"]
    assert job["status"] == "succeeded"  # the worker generated from no prompt at all
    assert (params["prompt"], params["mode"], params["strength"]) == ("", "img2img", 0.75)
    assert (params["num_images"], params["width"], params["height"]) == (2, *source_size)


@pytest.mark.parametrize(
    ("options", "param", "code"),
    [
        ({"extra_body": {"stream": True}}, "stream", "unknown_parameter"),  # never streamed
        ({"extra_body": {"prompt": "a cat"}}, "prompt", "unknown_parameter"),
        ({"model": "tiny-flaky"}, "image", "invalid_request"),  # no supports_i2i
        ({"n": 11}, "n", "validation_error"),
    ],
)
def test_a_variation_refuses_what_dall_e_2_does_not_take(
    client: openai.OpenAI, options: dict[str, Any], param: str, code: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.create_variation(
            image=("source.png", pattern_png(), "image/png"), **{"model": "tiny-sd", **options}
        )

    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["param"], error["code"]) == (param, code)


# --- models and errors --------------------------------------------------------------------


def test_models_list_is_what_the_live_workers_serve(
    client: openai.OpenAI, registry: Registry
) -> None:
    """The session's workers run tiny-sd and tiny-flaky: the list offers those (a
    client's dropdown shows what will run), a call for another model is refused at
    once instead of waiting COMPAT_WAIT_S for a worker that never comes."""
    models = list(client.models.list())

    assert [model.id for model in models] == [
        m for m in registry.models if m in {"tiny-sd", "tiny-flaky"}
    ]
    assert {model.object for model in models} == {"model"}
    assert client.models.retrieve("tiny-sd").id == "tiny-sd"
    assert client.models.retrieve("tiny-batch").id == "tiny-batch"  # in the registry
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("dall-e-3")
    with pytest.raises(openai.NotFoundError, match="tiny-batch"):
        client.images.generate(prompt="nobody serves it", model="tiny-batch")


@pytest.mark.parametrize(
    ("options", "param"),
    [
        ({"size": "512x512"}, "size"),  # over tiny-sd's max_size (256x256)
        ({"size": "huge"}, "size"),
        ({"n": 11}, "n"),  # over DALL-E 2's 10 images a call
        ({"extra_body": {"num_inference_steps": 11}}, "num_inference_steps"),
        ({"extra_body": {"negativ_prompt": "typo"}}, "negativ_prompt"),
        ({"output_format": "gif"}, "output_format"),
    ],
)
def test_a_bad_parameter_is_a_bad_request_naming_it(
    client: openai.OpenAI, api_server: ApiProcess, options: dict[str, Any], param: str
) -> None:
    prompt = marker("bad")
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="tiny-sd", prompt=prompt, **options)

    error = caught.value.body
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert jobs_with(api_server.url, prompt) == []  # nothing was queued


def test_a_size_over_the_models_maximum_says_the_maximum(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(model="tiny-sd", prompt=marker("big"), size="512x512")

    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == "size"
    assert error["message"].startswith(
        "size 512x512 is over tiny-sd's maximum of 256x256 (max_size)"
    )


def test_an_unknown_model_is_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(model="dall-e-3", prompt=marker("model"))

    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["param"], error["code"]) == ("model", "model_not_found")
    assert "tiny-sd" in error["message"]


def test_a_failed_job_is_a_server_error_naming_it(
    client: openai.OpenAI, api_server: ApiProcess
) -> None:
    prompt = marker("raise")  # the flaky model raises on this prompt
    with pytest.raises(openai.InternalServerError) as caught:
        client.images.generate(model="tiny-flaky", prompt=prompt, size="64x64")

    [job] = jobs_with(api_server.url, prompt)
    assert job["status"] == "failed"
    assert caught.value.status_code == 500
    assert job["id"] in caught.value.message
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_a_keyed_api_refuses_a_wrong_key(keyed_api: ApiProcess) -> None:
    with (
        keyed_client(keyed_api, "wrong-key-0123456789abcdef") as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.images.generate(prompt=marker("auth"))
    assert caught.value.body["code"] == "invalid_api_key"  # type: ignore[index]

    missing = httpx.post(f"{keyed_api.url}/v1/images/generations", json={"prompt": "x"})
    assert missing.status_code == 401
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}
    with keyed_client(keyed_api, KEY_A) as sdk:
        assert "tiny-sd" in [model.id for model in sdk.models.list()]


def test_over_the_rate_limit_is_a_rate_limit_error(keyed_api: ApiProcess) -> None:
    headers = {"Authorization": f"Bearer {KEY_B}"}
    first = httpx.post(
        f"{keyed_api.url}/jobs",
        json={"prompt": marker("quota"), "model": "tiny-sd"},
        headers=headers,
    )
    assert first.status_code == 202  # the key's one job this minute

    prompt = marker("over")
    with keyed_client(keyed_api, KEY_B) as sdk, pytest.raises(openai.RateLimitError) as caught:
        sdk.images.generate(model="tiny-sd", prompt=prompt, size="64x64")

    assert int(caught.value.response.headers["Retry-After"]) > 0
    assert caught.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    assert jobs_with(keyed_api.url, prompt, KEY_B) == []


def test_a_wait_past_compat_wait_s_is_an_error_naming_the_running_job(
    keyed_api: ApiProcess,
) -> None:
    prompt = f"slow {marker('timeout')}"  # 0.2 s a step on the flaky model: 4 s > 1 s
    with keyed_client(keyed_api, KEY_A) as sdk, pytest.raises(openai.InternalServerError) as caught:
        sdk.images.generate(
            model="tiny-flaky",
            prompt=prompt,
            size="64x64",
            extra_body={"num_inference_steps": 20},
        )

    assert caught.value.status_code == 504
    [job] = jobs_with(keyed_api.url, prompt, KEY_A)
    assert job["id"] in caught.value.message
    assert job["status"] in {"queued", "running"}  # it keeps going
    canceled = httpx.post(
        f"{keyed_api.url}/jobs/{job['id']}/cancel", headers={"Authorization": f"Bearer {KEY_A}"}
    )
    assert canceled.status_code in {200, 202}
