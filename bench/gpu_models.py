"""The models of the GPU benchmark: full-size SDXL and FLUX.1-schnell built from their
published configurations with random weights (no download), and tiny ones of the
same architecture for a CPU smoke run. bench/gpu.py measures them;
bench/gpu_worker.py runs them through a real darkroom worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from worker.random_weights import Architecture, Part, build_pipeline

PROMPT = "a lighthouse on a cliff at dusk, oil painting, dramatic light, highly detailed"
NEGATIVE = "low quality, blurry"

# --- published configurations ---------------------------------------------------------
# stabilityai/stable-diffusion-xl-base-1.0: unet/, vae/, text_encoder/, text_encoder_2/,
# scheduler/ config.json values.
SDXL_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "only_cross_attention": False,
    "block_out_channels": (320, 640, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 2048,
    "transformer_layers_per_block": (1, 2, 10),
    "attention_head_dim": (5, 10, 20),  # SDXL's config names the head *counts* so
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "upcast_attention": False,
    "resnet_time_scale_shift": "default",
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
}
SDXL_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "force_upcast": True,
}
CLIP_L: dict[str, Any] = {  # openai/clip-vit-large-patch14 text tower (SDXL and FLUX text_encoder)
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "projection_dim": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
}
CLIP_BIGG: dict[str, Any] = {  # laion/CLIP-ViT-bigG-14 text tower (SDXL text_encoder_2)
    "vocab_size": 49408,
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "projection_dim": 1280,
    "num_hidden_layers": 32,
    "num_attention_heads": 20,
    "max_position_embeddings": 77,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "bos_token_id": 0,
    "pad_token_id": 1,
    "eos_token_id": 2,
}
SDXL_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "interpolation_type": "linear",
    "use_karras_sigmas": False,
    "timestep_spacing": "leading",
    "steps_offset": 1,
}

# black-forest-labs/FLUX.1-schnell: transformer/, vae/, text_encoder_2/, scheduler/.
FLUX_TRANSFORMER: dict[str, Any] = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": False,
    "axes_dims_rope": (16, 56, 56),
}
FLUX_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 16,
    "norm_num_groups": 32,
    "sample_size": 1024,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "mid_block_add_attention": True,
    "force_upcast": True,
}
T5_XXL: dict[str, Any] = {  # google/t5-v1_1-xxl encoder (FLUX text_encoder_2)
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "dropout_rate": 0.1,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": True,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "eos_token_id": 1,
}
FLUX_SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": False,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

# Parameter counts of the published checkpoints' weights, for --check-configs. (FLUX.1-dev's
# transformer has 11,901,408,320: schnell lacks its 10,229,760-parameter guidance embedder.)
PUBLISHED_PARAMS = {
    "sdxl.unet": 2_567_463_684,
    "sdxl.vae": 83_653_863,
    "sdxl.text_encoder": 123_060_480,
    "sdxl.text_encoder_2": 694_659_840,
    "flux.transformer": 11_891_178_560,
    "flux.vae": 83_819_683,
    "flux.text_encoder": 123_060_480,
    "flux.text_encoder_2": 4_762_310_656,
}

# --cpu-smoke: the same builders with every size shrunk (wiring check, not a benchmark).
TINY: dict[str, dict[str, Any]] = {
    "sdxl_unet": {
        "sample_size": 8,
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "transformer_layers_per_block": (1, 1, 1),
        "attention_head_dim": (2, 4, 4),
        "norm_num_groups": 8,
        "cross_attention_dim": 64,
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 80,  # 6 * 8 + text_encoder_2 projection 32
    },
    "vae": {"block_out_channels": (8, 8, 16, 16), "layers_per_block": 1, "norm_num_groups": 8},
    "clip": {
        "vocab_size": 1000,
        "hidden_size": 32,
        "intermediate_size": 64,
        "projection_dim": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
    },
    "flux": {
        "num_layers": 1,
        "num_single_layers": 1,
        "attention_head_dim": 16,
        "num_attention_heads": 2,
        "joint_attention_dim": 32,
        "pooled_projection_dim": 32,
        "axes_dims_rope": (4, 6, 6),
    },
    "t5": {
        "vocab_size": 1000,
        "d_model": 32,
        "d_kv": 8,
        "d_ff": 64,
        "num_layers": 2,
        "num_heads": 4,
    },
}


@dataclass
class ModelSpec:
    name: str
    architecture: Callable[[bool], Architecture]  # tiny -> what to build
    dtype_name: str
    steps: int
    call_kwargs: dict[str, Any]


# --- building ---------------------------------------------------------------------------


def _tokenizer(max_length: int, vocab_size: int) -> Any:
    """A word-level tokenizer over the benchmark's prompts: real tokens, no vocabulary files."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "</s>", "<unk>", "<|startoftext|>", "<|endoftext|>"]
    words = sorted(set(pre_tokenizers.Whitespace().pre_tokenize_str(f"{PROMPT} {NEGATIVE}")))
    vocab = {tok: i for i, tok in enumerate(special + sorted({w for w, _ in words}))}
    assert len(vocab) < vocab_size
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    # The ignore: transformers leaves this constructor untyped.
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        model_max_length=max_length,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|startoftext|>",
        eos_token="</s>",
    )


def _with(config: dict[str, Any], tiny: bool, key: str) -> dict[str, Any]:
    return {**config, **TINY[key]} if tiny else dict(config)


def sdxl(tiny: bool = False) -> Architecture:
    clip_l, clip_g = _with(CLIP_L, tiny, "clip"), _with(CLIP_BIGG, tiny, "clip")
    tokenizer = partial(_tokenizer, 77, clip_l["vocab_size"])
    return Architecture(
        pipeline="StableDiffusionXLPipeline",
        models={
            "vae": Part("AutoencoderKL", _with(SDXL_VAE, tiny, "vae")),
            "text_encoder": Part("CLIPTextModel", clip_l, library="transformers"),
            "text_encoder_2": Part("CLIPTextModelWithProjection", clip_g, library="transformers"),
            "unet": Part("UNet2DConditionModel", _with(SDXL_UNET, tiny, "sdxl_unet")),
        },
        scheduler=Part("EulerDiscreteScheduler", SDXL_SCHEDULER),
        tokenizers={"tokenizer": tokenizer, "tokenizer_2": tokenizer},
        options={"force_zeros_for_empty_prompt": True},
    )


def flux(tiny: bool = False) -> Architecture:
    clip_l, t5 = _with(CLIP_L, tiny, "clip"), _with(T5_XXL, tiny, "t5")
    return Architecture(
        pipeline="FluxPipeline",
        models={
            "vae": Part("AutoencoderKL", _with(FLUX_VAE, tiny, "vae")),
            "text_encoder": Part("CLIPTextModel", clip_l, library="transformers"),
            "text_encoder_2": Part("T5EncoderModel", t5, library="transformers"),
            "transformer": Part("FluxTransformer2DModel", _with(FLUX_TRANSFORMER, tiny, "flux")),
        },
        scheduler=Part("FlowMatchEulerDiscreteScheduler", FLUX_SCHEDULER),
        tokenizers={
            "tokenizer": partial(_tokenizer, 77, clip_l["vocab_size"]),
            "tokenizer_2": partial(_tokenizer, 512, t5["vocab_size"]),
        },
    )


SPECS = {
    "sdxl": ModelSpec(
        name="sdxl",
        architecture=sdxl,
        dtype_name="float16",
        steps=30,
        call_kwargs={"guidance_scale": 7.0, "negative_prompt": NEGATIVE},
    ),
    "flux": ModelSpec(
        name="flux-schnell",
        architecture=flux,
        dtype_name="bfloat16",
        steps=4,
        call_kwargs={"guidance_scale": 0.0, "max_sequence_length": 256},
    ),
}


def build(spec: ModelSpec, device: str, dtype: Any, tiny: bool) -> Any:
    """`spec`'s pipeline with random weights on `device` in `dtype`, ready to call."""
    pipe = build_pipeline(spec.architecture(tiny), device=device, dtype=dtype)
    pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe
