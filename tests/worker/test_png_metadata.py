"""Each PNG a worker stores carries its parameters: A1111's infotext and darkroom's JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image

from shared.infotext import checkpoint_sha256, short_hash
from shared.jobs import JobRecord, utcnow
from shared.loras import ResolvedLora
from shared.registry import Registry
from shared.settings import Settings
from tests.worker.test_inference import params
from worker.outcomes import encode_images
from worker.png_metadata import PngMetadata


def record(**overrides: object) -> JobRecord:
    return JobRecord(
        id="job-png-1",
        created_at=utcnow(),
        model="tiny-sd",
        model_used="tiny-sd",
        queue="model.tiny-sd",
        params=params(num_images=2, seed=100, sampler="Euler a", **overrides),
    )


def stored(png: bytes) -> dict[str, str]:
    """The text chunks of a stored PNG, as any reader (PIL here) finds them."""
    image = Image.open(io.BytesIO(png))
    assert isinstance(image, Image.Image)
    return dict(getattr(image, "text", {}))


def images(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (64, 64), (10 * i, 20, 30)) for i in range(count)]


def test_each_image_carries_its_parameters(registry: Registry) -> None:
    job = record(
        loras=[ResolvedLora(name="ink", scale=0.8, sha256="ab" * 32, kind="hub", source="o/ink")]
    )
    uploads, _ = encode_images(job, images(2), PngMetadata(registry.models))

    model_hash = short_hash(checkpoint_sha256("tiny-sd", registry.models["tiny-sd"]))
    for index, upload in enumerate(uploads):
        chunks = stored(upload.data)
        assert chunks["parameters"] == (
            "a red fox in the snow\n"
            "Negative prompt: blurry\n"
            f"Steps: 2, Sampler: Euler a, CFG scale: 7.5, Seed: {100 + index}, Size: 64x64, "
            f"Model hash: {model_hash}, Model: tiny-sd"
        )
        darkroom = json.loads(chunks["darkroom"])
        assert darkroom == {
            "job_id": "job-png-1",
            "model": "tiny-sd",
            "prompt": "a red fox in the snow",
            "optimized_prompt": None,
            "negative_prompt": "blurry",
            "seed": 100 + index,
            "steps": 2,
            "guidance_scale": 7.5,
            "width": 64,
            "height": 64,
            "sampler": "Euler a",
            "strength": None,
            "mode": "txt2img",
            "loras": [{"name": "ink", "scale": 0.8}],
            "version": darkroom["version"],
        }
        assert darkroom["version"]  # the installed package's


def test_text_beyond_latin1_reads_back_whole(registry: Registry) -> None:
    job = record(prompt="雪の中の赤い狐", negative_prompt="ぼやけた")
    [upload, _] = encode_images(job, images(2), PngMetadata(registry.models))[0]

    chunks = stored(upload.data)
    assert chunks["parameters"].startswith("雪の中の赤い狐\nNegative prompt: ぼやけた\n")
    assert json.loads(chunks["darkroom"])["prompt"] == "雪の中の赤い狐"


def test_with_png_metadata_off_a_png_carries_no_text(registry_file: Path) -> None:
    settings = Settings(_env_file=None, registry_path=registry_file, png_metadata="off")  # type: ignore[call-arg]
    metadata = PngMetadata.from_settings(settings, {})
    assert metadata is None

    uploads, _ = encode_images(record(), images(2), metadata)
    assert [stored(upload.data) for upload in uploads] == [{}, {}]
    on = Settings(_env_file=None, registry_path=registry_file)  # type: ignore[call-arg]
    assert PngMetadata.from_settings(on, {}) is not None  # on unless turned off
