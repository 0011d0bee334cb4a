"""Hostile input is refused with a 4xx, never a 500, and nothing of it is stored or queued."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zlib
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from PIL import Image

from api.images import decode_image
from shared.constants import DEFAULT_QUEUE, broker_lists, model_queue


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encoded(image: Image.Image, format_: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format_)
    return buffer.getvalue()


def noise(width: int, height: int) -> Image.Image:
    return Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image (made by hand: Pillow would allocate it)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + png_chunk(b"IEND", b"")
    )


def png_with_text_bomb() -> bytes:
    """A valid 8x8 PNG carrying a zTXt chunk that inflates 200 KB into 200 MB."""
    png = encoded(Image.new("RGB", (8, 8)), "PNG")
    bomb = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * (200 << 20), 9))
    return png[:33] + bomb + png[33:]  # after the signature and IHDR


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG with its frame header rewritten to claim another size."""
    data = bytearray(encoded(noise(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def corrupt_crc(data: bytes) -> bytes:
    return data[:40] + bytes([data[40] ^ 0xFF]) + data[41:]


HOSTILE_IMAGES: dict[str, str] = {
    "png claiming 100000x100000": b64(png_claiming(100_000, 100_000)),
    "png claiming 4097x4096": b64(png_claiming(4097, 4096)),
    "png decompression bomb (1 bit, 20000x20000)": b64(
        encoded(Image.new("1", (20_000, 20_000)), "PNG")
    ),
    "png text-chunk bomb": b64(png_with_text_bomb()),
    "jpeg claiming 60000x60000": b64(jpeg_claiming(60_000, 60_000)),
    "truncated png": b64(truncated(encoded(noise(64, 64), "PNG"))),
    "truncated jpeg": b64(truncated(encoded(noise(64, 64), "JPEG"))),
    "png with a bad checksum": b64(corrupt_crc(encoded(noise(64, 64), "PNG"))),
    "png signature then garbage": b64(b"\x89PNG\r\n\x1a\n" + os.urandom(256)),
    "gif": b64(encoded(Image.new("RGB", (8, 8)), "GIF")),
    "bmp": b64(encoded(Image.new("RGB", (8, 8)), "BMP")),
    "svg": b64(b'<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>'),
    "empty": "",
    "not base64": "%%%not base64%%%",
    "data url without base64": "data:image/png," + b64(encoded(noise(8, 8), "PNG")),
}


def nothing_stored(client: redis.Redis) -> bool:
    lists = [*broker_lists(DEFAULT_QUEUE), *broker_lists(model_queue("tiny-sd"))]
    return client.keys("darkroom:job*") == [] and all(client.llen(q) == 0 for q in lists)


@pytest.mark.parametrize("image", list(HOSTILE_IMAGES.values()), ids=list(HOSTILE_IMAGES))
def test_hostile_init_images_are_refused(
    api: TestClient, api_redis: redis.Redis, image: str
) -> None:
    response = api.post("/jobs", json={"prompt": "x", "model": "tiny-sd", "init_image": image})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "init_image"
    assert error["type"] == "invalid_request"
    assert nothing_stored(api_redis)


def test_the_largest_decodable_image_decodes() -> None:
    # The decoder's bound is on pixels (16 M, 4096x4096), not on the file's size.
    decoded = decode_image(b64(encoded(Image.new("RGB", (4096, 4096)), "PNG")), "init_image")
    assert (decoded.width, decoded.height) == (4096, 4096)


def test_the_largest_image_the_model_takes_is_accepted(api: TestClient) -> None:
    image = b64(encoded(Image.new("RGB", (256, 256)), "PNG"))  # tiny-sd's max_size
    body = {"prompt": "x", "model": "tiny-sd", "init_image": image, "width": 64, "height": 64}
    assert api.post("/jobs", json=body).status_code == 202


@pytest.mark.parametrize("field", ["init_image", "mask_image"])
def test_an_input_image_over_the_models_max_size_is_422(
    api: TestClient, api_redis: redis.Redis, field: str
) -> None:
    """The probe: a 4096x4096 image and mask, n=4, on a model limited to 256
    (inpainting keeps the input's size, so it would have made four 4096x4096 images)."""
    small = b64(encoded(Image.new("RGB", (256, 256)), "PNG"))
    large = b64(encoded(Image.new("RGB", (4096, 4096)), "PNG"))
    images = {"init_image": small, "mask_image": small, field: large}
    response = api.post(
        "/jobs", json={"prompt": "x", "model": "tiny-sd", "num_images": 4, **images}
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert "4096x4096" in error["message"]
    assert "256x256" in error["message"]
    assert nothing_stored(api_redis)


BAD_FIELDS: dict[str, tuple[dict[str, Any], str]] = {
    "too many webhook events": (
        {"webhook_events_filter": ["start", "progress", "completed", "completed"]},
        "webhook_events_filter",
    ),
    "model name too long": ({"model": "m" * 201}, "model"),
    "NaN guidance": ({"guidance_scale": float("nan")}, "guidance_scale"),
    "infinite deadline": ({"deadline": float("inf")}, "deadline"),
    "huge width": ({"width": 10**30}, "width"),
    "prompt of the wrong type": ({"prompt": ["x"]}, "prompt"),
}


@pytest.mark.parametrize(("fields", "field"), list(BAD_FIELDS.values()), ids=list(BAD_FIELDS))
def test_out_of_bounds_fields_are_422(
    api: TestClient, api_redis: redis.Redis, fields: dict[str, Any], field: str
) -> None:
    response = api.post(
        "/jobs",
        content=_json({"prompt": "x", **fields}),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert nothing_stored(api_redis)


def _json(body: dict[str, Any]) -> str:
    return json.dumps(body)  # allow_nan: FastAPI's JSON parser accepts NaN and Infinity


@pytest.mark.parametrize(
    ("name", "value"),
    [("Idempotency-Key", "k" * 256), ("Cancel-After", "1" * 65), ("Prefer", "wait," * 52)],
)
def test_oversized_headers_are_422(
    api: TestClient, api_redis: redis.Redis, name: str, value: str
) -> None:
    response = api.post("/jobs", json={"prompt": "x"}, headers={name: value})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == f"header.{name.lower()}"
    assert nothing_stored(api_redis)


@pytest.mark.parametrize("cursor", ["nan", "inf", "-inf", "-1", "abc"])
def test_bad_list_cursors_are_422(api: TestClient, cursor: str) -> None:
    response = api.get("/jobs", params={"cursor": cursor})
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "query.cursor"
