"""Where `-o` puts a job's images: one file, or a directory for several."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from darkroom.client import DarkroomClient

_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


def image_paths(job: dict[str, Any], output: Path) -> list[Path]:
    """One path per image of `job`.

    `output` is a directory when it is one already, or has no suffix: the images
    go in it as <job id>-<n>.<ext>. Otherwise it is a file; several images then
    become <stem>-<n><suffix> beside it, so none overwrites another.
    """
    images = job["images"]
    if output.is_dir() or not output.suffix:
        return [
            output / f"{job['id']}-{n}{_EXTENSIONS.get(image['content_type'], '.png')}"
            for n, image in enumerate(images, start=1)
        ]
    if len(images) == 1:
        return [output]
    return [
        output.with_name(f"{output.stem}-{n}{output.suffix}") for n in range(1, len(images) + 1)
    ]


def save_images(client: DarkroomClient, job: dict[str, Any], output: Path) -> list[Path]:
    """Download every image of a finished job to the paths image_paths gives."""
    paths = image_paths(job, output)
    for image, path in zip(job["images"], paths, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.download(image["url"]))
    return paths
