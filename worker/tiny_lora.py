"""Tiny LoRA adapters for the tiny model (tests, benchmarks, the local demo): made with
PEFT on its UNet's attention, saved by diffusers as a trainer would save them.

Their up (B) matrices are random rather than zero (as after training), so each
adapter visibly changes the image; `seed` picks which.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
FILE = "pytorch_lora_weights.safetensors"


def make_sd_lora(tiny_sd: Path, out: Path, seed: int, std: float = 0.3, rank: int = 4) -> Path:
    """An SD 1.x LoRA for the tiny SD pipeline at `tiny_sd`, written to `out`."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils.state_dict_utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    # The type: ignores: diffusers' loaders are untyped.
    unet = UNet2DConditionModel.from_pretrained(tiny_sd / "unet")  # type: ignore[no-untyped-call]
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=ATTENTION))
    randomize_up(unet, std)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))  # type: ignore[no-untyped-call]
    with tempfile.TemporaryDirectory() as tmp:
        StableDiffusionPipeline.save_lora_weights(tmp, layers)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes((Path(tmp) / FILE).read_bytes())
    return out


def randomize_up(module: object, std: float) -> None:
    """Random up (B) matrices: an untrained PEFT adapter starts at zero, a no-op."""
    import torch

    for name, param in module.named_parameters():  # type: ignore[attr-defined]
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=std)
