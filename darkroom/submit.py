"""Helpers of `darkroom submit`: build a request body from CLI flags, save an image."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path
from typing import Any

from darkroom.client import DarkroomClient


def build_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": args.prompt}
    for name in ("model", "seed", "steps", "width", "height", "strength"):
        value = getattr(args, name)
        if value is not None:
            body[name] = value
    if args.init_image is not None:
        body["init_image"] = base64.b64encode(args.init_image.read_bytes()).decode()
    return body


def save_first_image(client: DarkroomClient, job: dict[str, Any], path: Path) -> None:
    path.write_bytes(client.download(job["images"][0]["url"]))
