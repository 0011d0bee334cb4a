"""Seamless tiling: circular padding in the model's convolutions for one call.

A convolution pads its input's border with zeros, so an image's left edge never
sees its right edge. With circular padding it does, in every layer of the UNet
and the VAE, and the image wraps around: its copies tile without a seam (what
A1111's "Tiling" does, for textures). The modules are the pipeline's own, shared
by its image-to-image and inpainting pipelines, so the padding is put back in a
`finally`: a job's tiling never leaks into the next.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import nn

# The pipeline components that convolve over the image (or its latents).
_COMPONENTS = ("unet", "vae", "transformer")


@contextlib.contextmanager
def tiling_in_use(pipe: Any, tiling: bool) -> Iterator[None]:
    if not tiling:
        yield
        return
    changed = [conv for conv in _convolutions(pipe) if conv.padding_mode != "circular"]
    kept = [conv.padding_mode for conv in changed]
    for conv in changed:
        conv.padding_mode = "circular"
    try:
        yield
    finally:
        for conv, mode in zip(changed, kept, strict=True):
            conv.padding_mode = mode


def _convolutions(pipe: Any) -> list[nn.Conv2d]:
    found: list[nn.Conv2d] = []
    for name in _COMPONENTS:
        module = getattr(pipe, name, None)
        if isinstance(module, nn.Module):
            found += [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return found
