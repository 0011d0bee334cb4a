"""runtime.memory toggles, applied on load. CUDA-only toggles say so on a CPU worker."""

from __future__ import annotations

from typing import Any

from shared.registry import MemoryConfig, ModelEntry
from worker.devices import DevicePlan

# The denoiser is where 8-bit pays; text encoders too for the large T5 ones.
_QUANTIZE_COMPONENTS = ["unet", "transformer", "text_encoder_2", "text_encoder_3"]


def quantization_config(
    memory: MemoryConfig, plan: DevicePlan, entry: ModelEntry, notes: list[str]
) -> Any | None:
    """A diffusers PipelineQuantizationConfig for use_8bit, or None."""
    if not memory.use_8bit:
        return None
    if not plan.is_cuda:
        notes.append("use_8bit ignored: bitsandbytes 8-bit quantisation needs CUDA")
        return None
    from diffusers.quantizers.pipe_quant_config import PipelineQuantizationConfig

    notes.append("use_8bit: denoiser and large text encoders quantised to 8-bit (bitsandbytes)")
    return PipelineQuantizationConfig(
        quant_backend="bitsandbytes_8bit",
        quant_kwargs={"load_in_8bit": True},
        components_to_quantize=_QUANTIZE_COMPONENTS,
    )


def apply_memory_options(
    pipe: Any, memory: MemoryConfig, plan: DevicePlan, notes: list[str]
) -> None:
    """Apply slicing and offload, then place the pipeline on its device."""
    if memory.enable_attention_slicing and hasattr(pipe, "enable_attention_slicing"):
        pipe.enable_attention_slicing()
        notes.append("attention slicing on")
    if memory.enable_vae_slicing and hasattr(pipe, "vae"):
        pipe.vae.enable_slicing()
        notes.append("VAE slicing on")
    if memory.enable_cpu_offload:
        if plan.is_cuda:
            # accelerate moves each component to the GPU only while it runs.
            pipe.enable_model_cpu_offload()
            notes.append("model CPU offload on (accelerate)")
            return
        notes.append("enable_cpu_offload ignored: CPU offload needs CUDA")
    # diffusers leaves 8-bit modules where bitsandbytes placed them.
    pipe.to(plan.device)
