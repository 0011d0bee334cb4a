"""A1111's image tools that need no worker: PNG Info."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from shared.png import encode_png

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
