"""decode_init_image: sane PNG/JPEG/WebP accepted; everything else is an InvalidRequest."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from api.images import MAX_INIT_BYTES, MAX_INIT_CHARS, decode_init_image
from shared.errors import InvalidRequest


def encode(img: Image.Image, fmt: str, **save: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **save)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def refused(value: str) -> str:
    with pytest.raises(InvalidRequest) as info:
        decode_init_image(value)
    assert info.value.field == "init_image"
    return str(info.value)


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGBA"), ("JPEG", "RGB"), ("WEBP", "RGB")])
def test_supported_formats_decode(fmt: str, mode: str) -> None:
    data = encode(Image.new(mode, (40, 24), "red"), fmt)
    decoded = decode_init_image(b64(data))
    assert (decoded.width, decoded.height) == (40, 24)
    assert decoded.format == fmt
    assert decoded.data == data


def test_data_url_decodes() -> None:
    data = encode(Image.new("RGB", (16, 8)), "PNG")
    decoded = decode_init_image(f"data:image/png;base64,{b64(data)}")
    assert (decoded.width, decoded.height, decoded.format) == (16, 8, "PNG")
    assert decoded.data == data


def test_data_url_without_base64_refused() -> None:
    assert "base64" in refused("data:image/png,rawbytes")


@pytest.mark.parametrize("value", ["not base64 at all!", "abc", "####"])
def test_not_base64_refused(value: str) -> None:
    assert "not valid base64" in refused(value)


def test_garbage_bytes_refused() -> None:
    message = refused(b64(b"\x00\x01definitely not an image" * 10))
    assert "not a valid PNG, JPEG or WebP" in message


def test_truncated_png_refused() -> None:
    data = encode(Image.new("RGB", (64, 64), "blue"), "PNG")
    assert "not a valid" in refused(b64(data[: len(data) // 2]))


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_refused(fmt: str) -> None:
    data = encode(Image.new("RGB", (16, 16)), fmt)
    assert "not a valid PNG, JPEG or WebP" in refused(b64(data))


def test_decompression_bomb_refused() -> None:
    # 400 megapixels of one bit: a few dozen kilobytes on the wire.
    data = encode(Image.new("1", (20000, 20000)), "PNG")
    assert len(data) < 200_000
    message = refused(b64(data))
    assert "decompression bomb" in message


def test_image_over_the_pixel_limit_refused_before_decoding() -> None:
    # 25 megapixels: under Pillow's own bomb limit, over darkroom's.
    data = encode(Image.new("1", (5000, 5000)), "PNG")
    assert len(data) < 50_000
    assert "5000x5000" in refused(b64(data))


def test_oversized_payload_refused() -> None:
    assert "larger than" in refused(b64(b"\x89PNG" + b"\x00" * MAX_INIT_BYTES))


def test_oversized_text_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*_: object, **__: object) -> bytes:
        raise AssertionError("decoded an oversized init_image")

    monkeypatch.setattr(base64, "b64decode", never)
    assert "larger than" in refused("A" * (MAX_INIT_CHARS + 1))
