"""Prompt optimisation (runtime.prompt_optimization): rewrite and translate prompts with GPT.

Runs on the worker, just before generation, so submitting a job never waits
on OpenAI. Any failure leaves the prompt as the client gave it: optimisation
is a nicety, never a reason to fail a job.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor

from shared.jobs import GenerationParams, JobRecord
from shared.registry import PromptOptimization
from shared.settings import Settings
from shared.store import JobStore

log = logging.getLogger(__name__)

# Hangul syllables and jamo.
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")

_SYSTEM = (
    "You rewrite prompts for a text-to-image diffusion model. Keep the user's subject and "
    "intent; add concrete visual detail (composition, lighting, style) only where it helps. "
    "Answer with the prompt alone, no quotes, no commentary."
)


def contains_korean(text: str) -> bool:
    return _HANGUL.search(text) is not None


class PromptOptimizer:
    def __init__(self, config: PromptOptimization, settings: Settings):
        self.config = config
        self.model = settings.openai_model
        self.client = None
        if not config.enabled:
            return
        if settings.openai_api_key is None:
            log.warning(
                "prompt optimisation is enabled but OPENAI_API_KEY is not set: "
                "prompts are used as given"
            )
            return
        from openai import OpenAI

        self.client = OpenAI(
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            timeout=settings.openai_timeout_s,
            max_retries=1,
        )

    @property
    def active(self) -> bool:
        """Enabled and able to call the API (a key is set)."""
        return self.client is not None

    def instructions(self, prompt: str, max_tokens: int) -> str:
        parts = [_SYSTEM]
        if self.config.translate_korean and contains_korean(prompt):
            parts.append("The prompt is in Korean: translate it to English first.")
        if self.config.max_length_by_model:
            # About 0.75 words per CLIP/T5 token; stay well inside the limit.
            parts.append(f"Keep it under {int(max_tokens * 0.6)} words ({max_tokens} tokens).")
        return " ".join(parts)

    def optimize(self, prompt: str, max_tokens: int) -> str | None:
        """The rewritten prompt, or None when optimisation is off or failed."""
        # An empty prompt (an OpenAI variation) asks for none: GPT would invent one.
        if self.client is None or not prompt:
            return None
        from openai import OpenAIError

        try:
            response = self.client.chat.completions.create(
                model=self.model,
                temperature=0.2,
                messages=[
                    {"role": "system", "content": self.instructions(prompt, max_tokens)},
                    {"role": "user", "content": prompt},
                ],
            )
        except OpenAIError as exc:
            log.warning("prompt optimisation failed, using the prompt as given: %s", exc)
            return None
        text = (response.choices[0].message.content or "").strip()
        return text if text and text != prompt else None


def optimized_params(
    optimizer: PromptOptimizer | None, store: JobStore, record: JobRecord, max_tokens: int
) -> GenerationParams:
    """The job's parameters with its optimised prompt (recorded on the job); as given if none."""
    if optimizer is None:
        return record.params
    optimized = optimizer.optimize(record.params.prompt, max_tokens)
    if optimized is None:
        return record.params
    params = record.params.model_copy(update={"optimized_prompt": optimized})
    store.update(record.id, params=params)
    log.info("job %s: prompt optimised to %r", record.id, optimized)
    return params


def optimized_batch_params(
    optimizer: PromptOptimizer | None, store: JobStore, batch: list[JobRecord], max_tokens: int
) -> list[GenerationParams]:
    """Each job's parameters with its optimised prompt; the API calls run at once,
    so a batch waits for the slowest answer, not for the sum of them."""
    if optimizer is None or not optimizer.active:
        return [r.params for r in batch]

    def optimize(record: JobRecord) -> GenerationParams:
        return optimized_params(optimizer, store, record, max_tokens)

    with ThreadPoolExecutor(max_workers=len(batch), thread_name_prefix="prompt") as pool:
        return list(pool.map(optimize, batch))
