"""GPU benchmark: full-size SDXL and FLUX.1-schnell with random weights, on CUDA.

    python bench/gpu.py                      # both models, batch 1 and 4, all variants
    python bench/gpu.py --models sdxl --batches 1 --variants baseline,compile
    python bench/gpu.py --check-configs      # any machine: build on the meta device, count params
    python bench/gpu.py --cpu-smoke          # any machine: tiny configs, CPU, wiring check only

The models are built from the published configuration values (written out
below) with random weights: no download, no token, and the same shapes, so
the same FLOPs and memory traffic, as the real checkpoints. Images are noise;
the timings are what the real weights would give (data-independent kernels).

Measured per model, variant and batch size, at 1024x1024:
  s/image      median wall time of one pipeline call / batch (text encoders,
               all denoising steps, VAE decode to a tensor; no PNG encode)
  images/s     batch / that time
  peak GiB     torch.cuda.max_memory_allocated over the measured calls
  TFLOP/image  counted by torch.utils.flop_counter on one uncompiled call
               (steps 1 and 2, extrapolated linearly to the full step count)
  % of peak    achieved FLOP/s over the GPU's dense bf16 (= fp16) tensor peak
               (table below, or --peak-tflops)
SDXL runs 30 steps with classifier-free guidance (guidance 7.0, negative
prompt: the UNet sees batch 2x) in fp16; FLUX.1-schnell 4 steps, no CFG, in
bf16 (what darkroom's worker uses for each, worker/devices.py).

Variants are cumulative:
  baseline        diffusers defaults: SDPA attention (F.scaled_dot_product_attention)
  channels_last   + UNet/VAE in channels_last memory format
  fuse_qkv        + fused QKV projections (fuse_qkv_projections)
  compile         + torch.compile(fullgraph=True) of the denoiser and the VAE decoder
                    (--compile-mode, default max-autotune); the first call, which
                    compiles, is reported separately as warm-up time
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PROMPT = "a lighthouse on a cliff at dusk, oil painting, dramatic light, highly detailed"
NEGATIVE = "low quality, blurry"
VARIANTS = ("baseline", "channels_last", "fuse_qkv", "compile")

# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s; fp16 is the same on these parts.
# Matched in order against torch.cuda.get_device_name().
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("H200", 989.0),
    ("GH200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
    ("RTX 6000 Ada", 364.0),
]

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
TINY = {
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
    build: Callable[[bool], Any]  # tiny -> pipeline (on the current default device/dtype)
    dtype_name: str
    steps: int
    call_kwargs: dict[str, Any]


@dataclass
class Row:
    model: str
    variant: str
    batch: int
    dtype: str
    steps: int
    size: int
    s_per_image: float | None = None
    images_per_s: float | None = None
    call_s: list[float] = field(default_factory=list)
    warmup_s: float | None = None
    peak_gib: float | None = None
    tflop_per_image: float | None = None
    peak_fraction: float | None = None
    error: str | None = None


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
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        model_max_length=max_length,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|startoftext|>",
        eos_token="</s>",
    )


def _with(config: dict[str, Any], tiny: bool, key: str) -> dict[str, Any]:
    return {**config, **TINY[key]} if tiny else dict(config)


def build_sdxl(tiny: bool = False) -> Any:
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    clip_l, clip_g = _with(CLIP_L, tiny, "clip"), _with(CLIP_BIGG, tiny, "clip")
    with _host():
        scheduler = EulerDiscreteScheduler(**SDXL_SCHEDULER)
        tokenizer = _tokenizer(77, clip_l["vocab_size"])
    return StableDiffusionXLPipeline(
        vae=AutoencoderKL(**_with(SDXL_VAE, tiny, "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig(**clip_l)),
        text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**clip_g)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=UNet2DConditionModel(**_with(SDXL_UNET, tiny, "sdxl_unet")),
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )


def build_flux(tiny: bool = False) -> Any:
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_l, t5 = _with(CLIP_L, tiny, "clip"), _with(T5_XXL, tiny, "t5")
    with _host():
        scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER)
        tokenizer = _tokenizer(77, clip_l["vocab_size"])
        tokenizer_2 = _tokenizer(512, t5["vocab_size"])
    return FluxPipeline(
        scheduler=scheduler,
        vae=AutoencoderKL(**_with(FLUX_VAE, tiny, "vae")),
        text_encoder=CLIPTextModel(CLIPTextConfig(**clip_l)),
        tokenizer=tokenizer,
        text_encoder_2=T5EncoderModel(T5Config(**t5)),
        tokenizer_2=tokenizer_2,
        transformer=FluxTransformer2DModel(**_with(FLUX_TRANSFORMER, tiny, "flux")),
    )


SPECS = {
    "sdxl": ModelSpec(
        name="sdxl",
        build=build_sdxl,
        dtype_name="float16",
        steps=30,
        call_kwargs={"guidance_scale": 7.0, "negative_prompt": NEGATIVE},
    ),
    "flux": ModelSpec(
        name="flux-schnell",
        build=build_flux,
        dtype_name="bfloat16",
        steps=4,
        call_kwargs={"guidance_scale": 0.0, "max_sequence_length": 256},
    ),
}


@contextmanager
def _defaults(device: str, dtype: Any) -> Iterator[None]:
    """Create parameters directly on `device` in `dtype` (no fp32 copy in host memory)."""
    import torch

    old_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old_dtype)


@contextmanager
def _host() -> Iterator[None]:
    """Schedulers and tokenizers: CPU and float32 whatever the models are built with."""
    with _defaults("cpu", __import__("torch").float32):
        yield


def build(spec: ModelSpec, device: str, dtype: Any, tiny: bool) -> Any:
    import torch

    with _defaults(device, dtype), torch.no_grad():
        pipe = spec.build(tiny)
    pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- variants -------------------------------------------------------------------------


def apply_variant(pipe: Any, variant: str, compile_mode: str) -> list[str]:
    """Apply `variant` on top of the previous ones (they are cumulative); say what was done."""
    import torch

    done = []
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    if variant == "channels_last":
        for module in (getattr(pipe, "unet", None), pipe.vae):
            if module is not None:
                module.to(memory_format=torch.channels_last)
                done.append(f"{type(module).__name__} channels_last")
    elif variant == "fuse_qkv":
        for module in (denoiser, pipe.vae):
            fuse = getattr(module, "fuse_qkv_projections", None)
            if fuse is None:
                done.append(f"{type(module).__name__}: no fuse_qkv_projections")
                continue
            fuse()
            done.append(f"{type(module).__name__} QKV fused")
    elif variant == "compile":
        inductor = torch._inductor.config
        inductor.conv_1x1_as_mm = True
        inductor.coordinate_descent_tuning = True
        inductor.epilogue_fusion = False
        inductor.coordinate_descent_check_all_directions = True
        # Batch 1 and batch 4 each get a static graph (warm-up compiles), not a dynamic one.
        torch._dynamo.config.automatic_dynamic_shapes = False
        denoiser.compile(mode=compile_mode, fullgraph=True)
        pipe.vae.decode = torch.compile(pipe.vae.decode, mode=compile_mode, fullgraph=True)
        done.append(f"torch.compile({compile_mode}, fullgraph) of denoiser and VAE decode")
    return done


# --- measuring ------------------------------------------------------------------------


def _call(pipe: Any, spec: ModelSpec, batch: int, size: int, steps: int) -> float:
    import torch

    cuda = torch.cuda.is_available() and pipe.device.type == "cuda"
    generator = torch.Generator("cpu").manual_seed(0)
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    pipe(
        prompt=PROMPT,
        num_inference_steps=steps,
        height=size,
        width=size,
        num_images_per_prompt=batch,
        generator=generator,
        output_type="pt",
        **spec.call_kwargs,
    )
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def count_flops(pipe: Any, spec: ModelSpec, batch: int, size: int, steps: int) -> float:
    """FLOPs of one call at `steps`: count at 1 and 2 steps, extrapolate (per-step cost is flat)."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for n in (1, 2):
        with FlopCounterMode(display=False) as counter:
            _call(pipe, spec, batch, size, n)
        counts.append(counter.get_total_flops())
    return float(counts[0] + (steps - 1) * (counts[1] - counts[0]))


def peak_tflops(override: float | None) -> tuple[float | None, str]:
    import torch

    if override:
        return override, f"--peak-tflops {override:g}"
    if not torch.cuda.is_available():
        return None, "no CUDA device"
    name = torch.cuda.get_device_name()
    for key, value in PEAK_BF16_TFLOPS:
        if key in name:
            return value, f"{name}: {value:g} TFLOP/s dense bf16 (table in bench/gpu.py)"
    return None, f"{name}: peak unknown (pass --peak-tflops)"


def measure_model(spec: ModelSpec, args: argparse.Namespace, device: str) -> list[Row]:
    import torch

    dtype = getattr(torch, args.dtype or spec.dtype_name)
    steps = args.steps or spec.steps
    print(f"building {spec.name} ({dtype}) ...", flush=True)
    started = time.perf_counter()
    pipe = build(spec, device, dtype, tiny=args.cpu_smoke)
    print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
    peak, _ = peak_tflops(args.peak_tflops)
    flops = {}
    for batch in args.batches:
        try:
            flops[batch] = count_flops(pipe, spec, batch, args.size, steps)
        except Exception as exc:  # noqa: BLE001 - a counting failure must not cost the timings
            print(f"  FLOP count failed at batch {batch}: {exc}", flush=True)
    rows = []
    for variant in args.variants:
        for note in apply_variant(pipe, variant, args.compile_mode):
            print(f"  {variant}: {note}", flush=True)
        for batch in args.batches:
            row = Row(spec.name, variant, batch, str(dtype).replace("torch.", ""), steps, args.size)
            try:
                _measure(row, pipe, spec, args, device, flops.get(batch), peak)
            except torch.cuda.OutOfMemoryError as exc:
                row.error = f"out of memory: {str(exc).splitlines()[0]}"
            except Exception as exc:  # noqa: BLE001 - report the row as failed, measure the others
                row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            print("  " + _line(row), flush=True)
            rows.append(row)
    del pipe
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def _measure(
    row: Row,
    pipe: Any,
    spec: ModelSpec,
    args: argparse.Namespace,
    device: str,
    flops: float | None,
    peak: float | None,
) -> None:
    import torch

    row.warmup_s = round(_call(pipe, spec, row.batch, row.size, row.steps), 3)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    row.call_s = [
        round(_call(pipe, spec, row.batch, row.size, row.steps), 4) for _ in range(args.repeats)
    ]
    call = statistics.median(row.call_s)
    row.s_per_image = round(call / row.batch, 4)
    row.images_per_s = round(row.batch / call, 4)
    if device == "cuda":
        row.peak_gib = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if flops:
        row.tflop_per_image = float(f"{flops / row.batch / 1e12:.4g}")
        if peak:
            row.peak_fraction = round(flops / call / (peak * 1e12), 4)


def _line(row: Row) -> str:
    if row.error:
        return f"{row.model} {row.variant} b{row.batch}: ERROR {row.error}"
    frac = f"{row.peak_fraction:.1%}" if row.peak_fraction is not None else "n/a"
    return (
        f"{row.model} {row.variant} b{row.batch}: {row.s_per_image:.3f} s/image, "
        f"{row.images_per_s:.2f} images/s, peak {row.peak_gib} GiB, "
        f"{row.tflop_per_image} TFLOP/image, {frac} of peak (warm-up {row.warmup_s:.1f} s)"
    )


def table(rows: list[Row], markdown: bool) -> str:
    headers = [
        "model",
        "variant",
        "batch",
        "s/image",
        "images/s",
        "peak GiB",
        "TFLOP/img",
        "% peak",
    ]
    body = []
    for r in rows:
        if r.error:
            body.append([r.model, r.variant, str(r.batch), "ERROR", r.error[:40], "", "", ""])
            continue
        body.append(
            [
                r.model,
                r.variant,
                str(r.batch),
                f"{r.s_per_image:.3f}",
                f"{r.images_per_s:.2f}",
                "-" if r.peak_gib is None else f"{r.peak_gib:.1f}",
                "-" if r.tflop_per_image is None else f"{r.tflop_per_image:.3g}",
                "-" if r.peak_fraction is None else f"{r.peak_fraction:.1%}",
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(x) for x in col) for col in zip(headers, *body, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers)] + [fmt.format(*row) for row in body])


# --- config check ---------------------------------------------------------------------


def check_configs() -> int:
    """Build every full-size module on the meta device (no memory) and count parameters."""
    import torch

    worst = 0.0
    for key, spec in SPECS.items():
        with torch.device("meta"):
            pipe = spec.build(False)
        for component in ("unet", "transformer", "vae", "text_encoder", "text_encoder_2"):
            module = getattr(pipe, component, None)
            if module is None:
                continue
            count = sum(p.numel() for p in module.parameters())
            published = PUBLISHED_PARAMS[f"{key}.{component}"]
            off = count / published - 1
            worst = max(worst, abs(off))
            print(
                f"{spec.name:13} {component:15} {count:>15,} params "
                f"(published {published:,}{'' if count == published else f', {off:+.3%}'})"
            )
    print("configs match the published checkpoints" if worst == 0 else "MISMATCH")
    return 0 if worst == 0 else 1


# --- main -----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/gpu.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--models", default="sdxl,flux", help="comma separated: sdxl, flux")
    parser.add_argument("--batches", default="1,4", help="comma separated batch sizes")
    parser.add_argument(
        "--variants",
        default=None,
        help=f"cumulative, from: {', '.join(VARIANTS)} (default: all; --cpu-smoke: no compile)",
    )
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=None, help="override: 30 SDXL, 4 FLUX")
    parser.add_argument("--dtype", choices=["float16", "bfloat16"], default=None)
    parser.add_argument("--repeats", type=int, default=3, help="measured calls per row")
    parser.add_argument("--compile-mode", default="max-autotune")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--check-configs", action="store_true", help="count params; no GPU needed")
    parser.add_argument(
        "--cpu-smoke", action="store_true", help="tiny configs on CPU: checks the wiring only"
    )
    parser.add_argument(
        "--worker",
        action="store_true",
        help="also run each model through a real darkroom worker (bench/gpu_worker.py)",
    )
    parser.add_argument("--worker-jobs", type=int, default=16, help="jobs per worker run")
    parser.add_argument(
        "--swap",
        action="store_true",
        help="only the model swap times: device <-> pinned host memory (bench/gpu_swap.py)",
    )
    parser.add_argument(
        "--worker-memory",
        default=None,
        help="comma separated: default, offload, 8bit (default: all; --cpu-smoke: default)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",") if b]
    chosen = args.variants
    args.variants = [v for v in (chosen or ",".join(VARIANTS)).split(",") if v]
    if args.cpu_smoke and chosen is None:
        args.variants = [v for v in args.variants if v != "compile"]
    models = [m for m in args.models.split(",") if m]
    for unknown in [v for v in args.variants if v not in VARIANTS] + [
        m for m in models if m not in SPECS
    ]:
        raise SystemExit(f"bench/gpu.py: unknown model or variant {unknown!r}")
    if args.check_configs:
        return check_configs()

    import torch

    if args.cpu_smoke:
        device = "cpu"
        args.size, args.steps, args.repeats = 64, args.steps or 2, 1
    elif not torch.cuda.is_available():
        print(
            "bench/gpu.py: CUDA is not available here "
            f"(torch {torch.__version__}, torch.version.cuda={torch.version.cuda}); "
            "nothing was measured. Run it on a machine with an NVIDIA GPU. "
            "(--check-configs and --cpu-smoke work without one; the CPU suite is "
            "`python -m bench`.)",
            file=sys.stderr,
        )
        return 2
    else:
        device = "cuda"

    started = datetime.now(UTC)
    peak, peak_source = peak_tflops(args.peak_tflops)
    gpu = torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke run)"
    print(f"bench/gpu.py {started:%Y-%m-%d %H:%M} UTC on {gpu}; peak: {peak_source}", flush=True)
    rows: list[Row] = []
    specs = [SPECS[key] for key in models]
    if args.cpu_smoke:
        specs = [ModelSpec(s.name, s.build, "float32", s.steps, s.call_kwargs) for s in specs]
    if args.swap:
        return _swap_only(specs, args, device, started, gpu)
    for spec in specs:
        rows += measure_model(spec, args, device)
    print()
    print(table(rows, args.markdown))
    worker_rows = _worker_rows(models, args, device) if args.worker else []
    payload = {
        "started": started.isoformat(),
        "device": gpu,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "peak_bf16_tflops": peak,
        "peak_source": peak_source,
        "args": {k: v for k, v in vars(args).items()},
        "rows": [asdict(r) for r in rows],
        "worker_rows": [asdict(r) for r in worker_rows],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    prefix = "gpu-smoke" if args.cpu_smoke else "gpu"
    path = RESULTS_DIR / f"{prefix}-{started:%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwritten: {path}")
    return 1 if any(r.error for r in [*rows, *worker_rows]) else 0


def _swap_only(
    specs: list[ModelSpec], args: argparse.Namespace, device: str, started: datetime, gpu: str
) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.gpu_swap import measure_swap, swap_table

    rows = []
    for spec in specs:
        print(f"{spec.name}: swap times", flush=True)
        rows.append(measure_swap(spec, device, args.cpu_smoke, args.repeats))
    print()
    print(swap_table(rows))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    prefix = "gpu-swap-smoke" if args.cpu_smoke else "gpu-swap"
    path = RESULTS_DIR / f"{prefix}-{started:%Y%m%dT%H%M%S}.json"
    payload = {"started": started.isoformat(), "device": gpu, "rows": [asdict(r) for r in rows]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwritten: {path}")
    return 1 if any(r.error for r in rows) else 0


def _worker_rows(models: list[str], args: argparse.Namespace, device: str) -> list[Any]:
    # Run as a script, this file's folder is on sys.path, not the repository.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench.gpu_worker import MEMORY_VARIANTS, measure_worker_rows, worker_table

    default = "default" if args.cpu_smoke else ",".join(MEMORY_VARIANTS)
    memory = [m for m in (args.worker_memory or default).split(",") if m]
    for unknown in [m for m in memory if m not in MEMORY_VARIANTS]:
        raise SystemExit(f"bench/gpu.py: unknown --worker-memory {unknown!r}")
    rows = []
    for key in models:
        spec = SPECS[key]
        steps = args.steps or spec.steps
        print(f"{spec.name}: through a darkroom worker ({', '.join(memory)})", flush=True)
        rows += measure_worker_rows(spec, device, args.size, steps, args.worker_jobs, memory)
    print()
    print(worker_table(rows))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
