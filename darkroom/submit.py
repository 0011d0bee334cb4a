"""`darkroom submit`'s flags as a `POST /jobs` body."""

from __future__ import annotations

import argparse
import base64
from typing import Any

# Flags passed on as they are, when given (flag dest == body field).
_FIELDS = (
    "negative_prompt",
    "model",
    "seed",
    "steps",
    "width",
    "height",
    "guidance_scale",
    "num_images",
    "priority",
    "strength",
)


def build_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": args.prompt}
    for name in _FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            body[name] = value
    if args.init_image is not None:
        try:
            data = args.init_image.read_bytes()
        except OSError as exc:
            message = f"darkroom submit: cannot read --init-image {args.init_image}: {exc}"
            raise SystemExit(message) from None
        body["init_image"] = base64.b64encode(data).decode()
    if getattr(args, "lora", None):
        body["loras"] = [_lora(spec) for spec in args.lora]
    return body


def _lora(spec: str) -> dict[str, Any]:
    """`name` or `name:scale` (the adapter's own scale when none is given)."""
    name, _, scale = spec.partition(":")
    if not name:
        raise SystemExit(f"darkroom submit: --lora {spec!r}: name the adapter")
    if not scale:
        return {"name": name}
    try:
        return {"name": name, "scale": float(scale)}
    except ValueError:
        raise SystemExit(f"darkroom submit: --lora {spec!r}: the scale is not a number") from None
