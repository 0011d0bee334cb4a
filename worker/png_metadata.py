"""The generation parameters written into each PNG a worker stores (PNG_METADATA).

Two text chunks. `parameters`: AUTOMATIC1111's infotext (shared.infotext), the
text its clients, other tools and image sites read back, and that the A1111
call answered in `info.infotexts`. `darkroom`: the job's own account of the
image as JSON (the job, the model used, every resolved parameter), for tools
that want more than A1111's text. The image then says how it was made wherever
it goes. PNG_METADATA=off writes neither (operators whose images must not carry
their prompts).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.infotext import (
    PARAMETERS_CHUNK,
    checkpoint_sha256,
    infotext,
    sampler_label,
    short_hash,
)
from shared.jobs import JobRecord
from shared.registry import ModelEntry
from shared.settings import Settings
from shared.version import darkroom_version

DARKROOM_CHUNK = "darkroom"


@dataclass(frozen=True)
class PngMetadata:
    """The text chunks of a job's images, naming its model as the registry `models` has it."""

    models: Mapping[str, ModelEntry]

    @classmethod
    def from_settings(
        cls, settings: Settings, models: Mapping[str, ModelEntry]
    ) -> PngMetadata | None:
        """A worker's writer of its PNGs' parameters; None with PNG_METADATA off."""
        return cls(models) if settings.png_metadata else None

    def chunks(self, record: JobRecord, index: int) -> dict[str, str]:
        """The text chunks of image `index` of `record` (its seed: the job's + index)."""
        params = record.params
        seed = params.seed + index
        model = record.model_used or record.model
        entry = self.models.get(model)
        model_hash = short_hash(checkpoint_sha256(model, entry)) if entry is not None else None
        text = infotext(params, seed, sampler_label(params), model, model_hash)
        return {PARAMETERS_CHUNK: text, DARKROOM_CHUNK: json.dumps(_document(record, seed, model))}


def _document(record: JobRecord, seed: int, model: str) -> dict[str, Any]:
    """The `darkroom` chunk: the job and the parameters the image was made with."""
    params = record.params
    return {
        "job_id": record.id,
        "model": model,
        "prompt": params.prompt,
        # The prompt the model was given, when prompt optimisation rewrote it.
        "optimized_prompt": params.optimized_prompt,
        "negative_prompt": params.negative_prompt,
        "seed": seed,
        "steps": params.steps,
        "guidance_scale": params.guidance_scale,
        "width": params.width,
        "height": params.height,
        "sampler": params.sampler,
        "strength": params.strength,
        "mode": params.mode,
        "loras": [{"name": lora.name, "scale": lora.scale} for lora in params.loras],
        "version": darkroom_version(),
    }
