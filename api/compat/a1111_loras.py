"""AUTOMATIC1111's LoRA syntax: `<lora:name:weight>` inside the prompt.

As A1111 does, the tags are taken out of the prompt text the model reads and the
adapters they name are applied at their weights (1 when none is given; a third
field, A1111's separate UNet weight, is read but the one weight applies to
both). A name this key cannot use, or one made for another base model, is left
out and listed in the answer's `info.darkroom_ignored`: A1111 warns and
generates, so clients written for it keep working.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from api.state import AppState
from shared.errors import InvalidRequest
from shared.loras import MAX_SCALE, LoraChoice

TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>", re.IGNORECASE)


@dataclass
class PromptLoras:
    prompt: str
    loras: list[LoraChoice] = field(default_factory=list)
    # What was left out, and why, for info.darkroom_ignored.
    ignored: list[str] = field(default_factory=list)


def take_loras(state: AppState, owner: str, prompt: str, model: str | None) -> PromptLoras:
    """The prompt without its `<lora:...>` tags, the adapters they name that apply."""
    found = PromptLoras(_without_tags(prompt))
    name = model or state.registry.runtime.primary_model
    base = state.registry.models[name].lora_base
    own = state.loras.own(owner) if TAG.search(prompt) else {}
    for match in TAG.finditer(prompt):
        wanted, weight = match.group(1).strip(), _weight(match.group(2))
        adapter = state.loras.lookup(wanted, own)
        if adapter is None:
            found.ignored.append(f"{wanted}: no such LoRA adapter")
        elif adapter.base != base:
            found.ignored.append(f"{wanted}: made for {adapter.base} models, not {name}")
        elif wanted in {c.name for c in found.loras}:
            found.ignored.append(f"{wanted}: named twice")
        else:
            found.loras.append(LoraChoice(name=wanted, scale=weight))
    return found


def _without_tags(prompt: str) -> str:
    text = TAG.sub("", prompt)
    # What A1111 leaves behind once the tags are gone: doubled spaces and commas.
    text = re.sub(r"\s*,\s*(,\s*)+", ", ", text)
    return re.sub(r"\s{2,}", " ", text).strip(" ,")


def _weight(raw: str | None) -> float:
    if raw is None or not raw.strip():
        return 1.0
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"<lora:...:{raw}>: the weight is not a number", "prompt") from None
    return max(-MAX_SCALE, min(MAX_SCALE, value))
