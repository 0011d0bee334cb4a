"""Custom pipeline classes that tests add to a registry through YAML alone."""

from typing import Any

from diffusers import StableDiffusionPipeline


class FlakyPipeline(StableDiffusionPipeline):
    """A Stable Diffusion pipeline that fails on purpose when the prompt asks it to."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        prompt = kwargs.get("prompt") or (args[0] if args else "")
        if any("raise" in p for p in ([prompt] if isinstance(prompt, str) else prompt)):
            raise RuntimeError("the flaky pipeline raised on purpose")
        return super().__call__(*args, **kwargs)
