"""A1111's image tools that need no worker: PNG Info, Extras upscaling and the refusals."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from shared.png import encode_png
from shared.settings import Settings

PARAMETERS = (
    "a lighthouse, at dusk\nNegative prompt: blurry\n"
    "Steps: 2, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 64x32, Model: sd"
)


def png(size: tuple[int, int], text: dict[str, str] | None = None) -> str:
    """A base64 PNG whose pixels differ from their neighbours, with text chunks."""
    width, height = size
    image = Image.new("RGB", size)
    image.putdata([(x * 5 % 256, y * 7 % 256, x + y) for y in range(height) for x in range(width)])
    return base64.b64encode(encode_png(image, text)).decode()


def decoded(value: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(value)))


def extras(api: TestClient, **body: Any) -> dict[str, Any]:
    answer = api.post("/sdapi/v1/extra-single-image", json=body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def refusal(api: TestClient, path: str, body: dict[str, Any], status: int = 422) -> str:
    """A refused call's message, checked to be in A1111's error shape."""
    answer = api.post(f"/sdapi/v1/{path}", json=body)
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error", "detail", "body", "errors"}
    return str(answer.json()["errors"])


# --- png-info ---------------------------------------------------------------------------------


def test_png_info_reads_the_parameters_and_every_other_chunk(api: TestClient) -> None:
    image = png((64, 32), {"parameters": PARAMETERS, "darkroom": '{"job_id": "j1"}'})
    answer = api.post("/sdapi/v1/png-info", json={"image": f"data:image/png;base64,{image}"})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["info"] == PARAMETERS
    assert body["items"] == {"darkroom": '{"job_id": "j1"}'}
    parameters = body["parameters"]
    assert (parameters["Prompt"], parameters["Negative prompt"]) == (
        "a lighthouse, at dusk",
        "blurry",
    )
    assert (parameters["Size-1"], parameters["Size-2"], parameters["Seed"]) == ("64", "32", "5")


def test_png_info_of_an_image_without_parameters(api: TestClient) -> None:
    body = api.post("/sdapi/v1/png-info", json={"image": png((8, 8))}).json()
    assert (body["info"], body["items"], body["parameters"]["Prompt"]) == ("", {}, "")


@pytest.mark.parametrize("image", ["", "bm90IGFuIGltYWdl", "%%%"])
def test_png_info_refuses_what_is_not_an_image(api: TestClient, image: str) -> None:
    assert "image" in refusal(api, "png-info", {"image": image})


# --- extras -----------------------------------------------------------------------------------


def test_scale_by_keeps_the_parameters_and_records_the_upscale(api: TestClient) -> None:
    source = png((64, 32), {"parameters": PARAMETERS})
    answer = extras(api, image=source, upscaler_1="Lanczos", upscaling_resize=2)

    result = decoded(answer["image"])
    assert result.size == (128, 64)
    text = dict(getattr(result, "text", {}))
    assert text == {
        "parameters": PARAMETERS,
        "postprocessing": "Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos",
    }
    assert answer["html_info"] == (
        "<p>Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos</p>"
    )


def test_sizes_are_rounded_down_to_the_8_pixel_grid_as_a1111s(api: TestClient) -> None:
    answer = extras(api, image=png((30, 20)), upscaler_1="Nearest", upscaling_resize=1.5)
    assert decoded(answer["image"]).size == (40, 24)  # 45x30, rounded down


def test_scale_to_covers_the_size_and_crops_to_it(api: TestClient) -> None:
    source = png((64, 32))
    to_96 = {"image": source, "resize_mode": 1, "upscaling_resize_w": 96, "upscaling_resize_h": 96}
    cropped = extras(api, **to_96, upscaler_1="Nearest", upscaling_crop=True)

    # Scaled by 3 (96 / 32) to 192x96, then cropped to 96x96 around the centre.
    result = decoded(cropped["image"]).convert("RGB")
    assert result.size == (96, 96)
    whole = decoded(source).convert("RGB").resize((192, 96), Image.Resampling.NEAREST)
    assert result.tobytes() == whole.crop((48, 0, 144, 96)).tobytes()
    assert "Postprocess crop to: 96x96" in cropped["html_info"]
    uncropped = extras(api, **to_96, upscaler_1="Nearest", upscaling_crop=False)
    assert decoded(uncropped["image"]).size == (192, 96)


def test_a_second_upscaler_is_blended_in_at_its_visibility(api: TestClient) -> None:
    source = png((16, 16))
    common = {"image": source, "upscaler_1": "Nearest", "upscaling_resize": 4}
    nearest = decoded(extras(api, **common)["image"]).convert("RGB")
    blended = extras(api, **common, upscaler_2="Lanczos", extras_upscaler_2_visibility=0.5)

    lanczos = decoded(source).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS)
    expected = Image.blend(nearest, lanczos, 0.5)
    assert decoded(blended["image"]).convert("RGB").tobytes() == expected.tobytes()
    assert "Postprocess upscaler 2: Lanczos" in blended["html_info"]


def test_upscaler_none_leaves_the_image_as_it_is(api: TestClient) -> None:
    source = png((24, 16), {"parameters": PARAMETERS})
    answer = extras(api, image=source, upscaler_1="None", upscaling_resize=4)
    result = decoded(answer["image"])
    assert result.size == (24, 16)
    assert result.convert("RGB").tobytes() == decoded(source).convert("RGB").tobytes()
    assert dict(getattr(result, "text", {})) == {"parameters": PARAMETERS}


def test_a_batch_upscales_each_image(api: TestClient) -> None:
    body = {
        "imageList": [{"data": png((16, 8)), "name": "a"}, {"data": png((8, 8)), "name": "b"}],
        "upscaler_1": "Lanczos",
        "upscaling_resize": 2,
    }
    answer = api.post("/sdapi/v1/extra-batch-images", json=body)
    assert answer.status_code == 200, answer.text
    assert [decoded(i).size for i in answer.json()["images"]] == [(32, 16), (16, 16)]


def test_an_upscale_past_extras_max_pixels_is_refused_before_any_work(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    with TestClient(create_app(make_settings(extras_max_pixels=64 * 64))) as small:
        assert extras(small, image=png((32, 32)), upscaler_1="Lanczos")  # 64x64: the limit
        message = refusal(
            small, "extra-single-image", {"image": png((40, 32)), "upscaler_1": "Lanczos"}
        )
        assert "80x64" in message
        assert "EXTRAS_MAX_PIXELS = 4096" in message
        # A batch: each image within the limit, all of them together within four times it.
        batch = {"imageList": [{"data": png((32, 32)), "name": str(i)} for i in range(5)]}
        message = refusal(small, "extra-batch-images", {**batch, "upscaler_1": "Lanczos"})
        assert "20480 pixels in all" in message


def test_png_metadata_off_writes_no_text_into_extras_outputs(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    with TestClient(create_app(make_settings(png_metadata=False))) as bare:
        answer = extras(bare, image=png((8, 8), {"parameters": PARAMETERS}), upscaler_1="Lanczos")
    assert dict(getattr(decoded(answer["image"]), "text", {})) == {}


@pytest.mark.parametrize("name", ["R-ESRGAN 4x+", "ESRGAN_4x", "LDSR", "SwinIR_4x", "ScuNET"])
def test_an_upscaler_with_a_model_is_refused_by_name(api: TestClient, name: str) -> None:
    message = refusal(api, "extra-single-image", {"image": png((8, 8)), "upscaler_1": name})
    assert name in message
    assert "available: None, Lanczos, Nearest" in message
    assert name in refusal(api, "extra-single-image", {"image": png((8, 8)), "upscaler_2": name})


@pytest.mark.parametrize(
    ("field", "restorer"),
    [("gfpgan_visibility", "GFPGAN"), ("codeformer_visibility", "CodeFormer")],
)
def test_face_restoration_is_refused_by_name(api: TestClient, field: str, restorer: str) -> None:
    message = refusal(api, "extra-single-image", {"image": png((8, 8)), field: 0.5})
    assert message == f"face restoration ({restorer}) is not available in darkroom"


def test_interrogation_is_refused_by_name(api: TestClient) -> None:
    message = refusal(api, "interrogate", {"image": png((8, 8)), "model": "clip"}, status=501)
    assert "interrogation (CLIP, DeepBooru) is not available" in message


def test_the_upscalers_are_listed_as_a1111_lists_them(api: TestClient) -> None:
    listed = api.get("/sdapi/v1/upscalers").json()
    assert [u["name"] for u in listed] == ["None", "Lanczos", "Nearest"]
    assert listed[1] == {
        "name": "Lanczos",
        "model_name": None,
        "model_path": None,
        "model_url": None,
        "scale": 4,
    }


def test_the_image_tools_need_the_key_as_every_a1111_route(
    make_settings: Callable[..., Settings], api_redis: redis.Redis
) -> None:
    key = "image-tools-key-0123456789"
    with TestClient(create_app(make_settings(api_keys=key))) as keyed:
        body = {"image": png((8, 8)), "upscaler_1": "Lanczos"}
        for path in ("png-info", "extra-single-image", "interrogate"):
            assert keyed.post(f"/sdapi/v1/{path}", json=body).status_code == 401, path
        assert keyed.get("/sdapi/v1/upscalers").status_code == 401
        allowed = keyed.post("/sdapi/v1/extra-single-image", json=body, auth=("anyone", key))
        assert allowed.status_code == 200
