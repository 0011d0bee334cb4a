"""Real LoRA files for the tests, made at test time with PEFT (worker/tiny_lora.py for
the tiny SD model's; here, one in SDXL's layout)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from worker.tiny_lora import FILE, make_sd_lora, randomize_up

__all__ = ["make_sd_lora", "make_sdxl_lora"]


def make_sdxl_lora(out: Path, seed: int) -> Path:
    """A LoRA in SDXL's layout (its second text encoder's attention too), on a tiny
    CLIP text model: what an adapter trained for SDXL looks like to darkroom."""
    import torch
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=1000,
        projection_dim=32,
    )
    text_encoder = CLIPTextModelWithProjection(config)
    text_encoder.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    )
    randomize_up(text_encoder, 0.3)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder))
    return _saved(
        out,
        lambda d: StableDiffusionXLPipeline.save_lora_weights(
            d, unet_lora_layers=None, text_encoder_2_lora_layers=layers
        ),
    )


def _saved(out: Path, save: object) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        save(tmp)  # type: ignore[operator]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes((Path(tmp) / FILE).read_bytes())
    return out
