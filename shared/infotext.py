"""AUTOMATIC1111's infotext: an image's generation parameters as one text, written and read.

A1111 writes it into each PNG it saves (the `parameters` text chunk) and answers
it in txt2img's `info.infotexts`; people, tools and image sites read it back.
Its form: the prompt, a `Negative prompt: ...` line, then the settings as
`Key: value` pairs on one last line. The workers write it into the PNGs they
store and the API answers and parses it: both use this one implementation, so
the text in an image is the text its call answered.

A1111 names the model that made an image by its checkpoint's hash. darkroom has
no weight files to hash: the hash is of the registry entry (its name and
weights id), so it is stable while the entry is, and unique per entry.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from shared.jobs import GenerationParams
from shared.registry import ModelEntry
from shared.samplers import find_schedule

# The PNG text chunk A1111 keeps an image's infotext in.
PARAMETERS_CHUNK = "parameters"
# A1111's short hash (its checkpoint titles, `Model hash`): the sha256's first digits.
SHORT_HASH_DIGITS = 10
# A1111's word for "no sampler named": here, the pipeline's own scheduler.
DEFAULT_SAMPLER = "Default"
NEGATIVE_PREFIX = "Negative prompt:"

# A1111's own patterns (modules/infotext_utils.py): one `Key: value` pair, its value
# JSON-quoted when it holds a comma, colon or line break; a `WxH` size.
_PAIR = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
# A last line with fewer pairs than this is still prompt text, as A1111 reads it.
_MIN_PAIRS = 3
# What A1111's parser fills in for settings an infotext leaves out (its defaults),
# so that clients pasting the parsed parameters get what A1111 would give them.
_PARSED_DEFAULTS: dict[str, Any] = {
    "Clip skip": "1",
    "Hires resize-1": 0,
    "Hires resize-2": 0,
    "Hires sampler": "Use same sampler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
    "RNG": "GPU",
    "Schedule type": "Automatic",
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
}


def checkpoint_sha256(name: str, entry: ModelEntry) -> str:
    """The hash A1111's clients know the registry model `name` by (see above)."""
    return hashlib.sha256(f"{name}\n{entry.id}".encode()).hexdigest()


def short_hash(sha256: str) -> str:
    return sha256[:SHORT_HASH_DIGITS]


def sampler_label(params: GenerationParams) -> str:
    """The job's sampler as its infotext names it."""
    return params.sampler or DEFAULT_SAMPLER


def infotext(
    params: GenerationParams, seed: int, sampler: str, model: str, model_hash: str | None
) -> str:
    """One image's parameters in A1111's text form (`seed`: that image's own)."""
    lines = [params.prompt]
    if params.negative_prompt:
        lines.append(f"{NEGATIVE_PREFIX} {params.negative_prompt}")
    settings: dict[str, object] = {
        "Steps": params.steps,
        "Sampler": sampler,
        "CFG scale": f"{params.guidance_scale:g}",
        "Seed": seed,
        "Size": f"{params.width}x{params.height}",
        "Model hash": model_hash,
        "Model": model,
    }
    schedule = find_schedule(params.scheduler)
    if schedule is not None:
        settings["Schedule type"] = schedule.label
    if params.strength is not None:
        settings["Denoising strength"] = f"{params.strength:g}"
    if params.hires is not None:
        hires = params.hires
        # A1111's own keys: the final size as a resize, the second pass's settings.
        settings["Denoising strength"] = f"{hires.strength:g}"
        settings["Hires resize"] = f"{hires.width}x{hires.height}"
        settings["Hires steps"] = hires.steps
        settings["Hires upscaler"] = hires.upscaler
    if params.tiling:
        settings["Tiling"] = True
    lines.append(settings_line(settings))
    return "\n".join(lines)


def settings_line(settings: Mapping[str, object]) -> str:
    """`Key: value, ...` as A1111 writes its settings (None: left out; a value holding a
    comma, colon or line break JSON-quoted, so that it reads back whole)."""
    return ", ".join(f"{k}: {_quote(v)}" for k, v in settings.items() if v is not None)


def parse(text: str) -> dict[str, Any]:
    """An infotext as A1111's `parse_generation_parameters` reads it: `Prompt`,
    `Negative prompt`, each setting as text (a size as `Size-1` and `Size-2`), and
    A1111's defaults for the settings left out."""
    *lines, last = text.strip().split("\n")
    if len(_PAIR.findall(last)) < _MIN_PAIRS:
        lines.append(last)
        last = ""
    parsed: dict[str, Any] = dict(zip(("Prompt", "Negative prompt"), _prompts(lines), strict=True))
    for key, value in _PAIR.findall(last):
        if not value:
            continue  # A1111 skips an empty value
        value = _unquote(value)
        size = _SIZE.match(value)
        if size is not None:
            parsed[f"{key}-1"], parsed[f"{key}-2"] = size.groups()
        else:
            parsed[key] = value
    for key, default in _PARSED_DEFAULTS.items():
        parsed.setdefault(key, default)
    if parsed["FP8 weight"] != "Disable":
        parsed.setdefault("Cache FP16 weight for LoRA", False)
    return parsed


def _prompts(lines: list[str]) -> tuple[str, str]:
    """The prompt and negative prompt of an infotext's lines: every line from the one
    starting `Negative prompt:` on is the negative prompt's."""
    prompt = negative = ""
    in_negative = False
    for raw in lines:
        line = raw.strip()
        if line.startswith(NEGATIVE_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PREFIX) :].strip()
        if in_negative:
            negative = f"{negative}\n{line}" if negative else line
        else:
            prompt = f"{prompt}\n{line}" if prompt else line
    return prompt, negative


def _quote(value: object) -> str:
    text = str(value)
    if not any(mark in text for mark in ",:\n"):
        return text
    return json.dumps(text, ensure_ascii=False)


def _unquote(value: str) -> str:
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    try:
        unquoted = json.loads(value)
    except ValueError:
        return value
    return unquoted if isinstance(unquoted, str) else value
