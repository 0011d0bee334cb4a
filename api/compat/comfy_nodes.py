"""GET /object_info: the ComfyUI nodes darkroom runs, as ComfyUI describes its own.

Clients read it to fill their pickers: Open WebUI lists the checkpoints from
`CheckpointLoaderSimple`'s `ckpt_name`, ComfyUI's front end builds its nodes
from it. Only the nodes darkroom translates are listed (api.compat.comfy_workflow),
with the registry's models, the key's LoRA adapters and the samplers and
schedulers darkroom can run, by ComfyUI's names.
"""

from __future__ import annotations

from typing import Any

from api.compat.comfy_names import LATENT_UPSCALE_METHODS, SAMPLERS, SCHEDULERS
from api.compat.comfy_workflow import MAX_BATCH, MAX_COMFY_SEED

_SIZE = ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}]
_SEED = ["INT", {"default": 0, "min": 0, "max": MAX_COMFY_SEED, "control_after_generate": True}]
_STEPS = ["INT", {"default": 20, "min": 1, "max": 10000}]
_CFG = ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}]
_DENOISE = ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]
_STRENGTH = ["FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}]


def object_info(models: list[str], loras: list[str], images: list[str]) -> dict[str, Any]:
    samplers, schedulers = [list(SAMPLERS)], [list(SCHEDULERS)]
    sampling = {
        "model": ["MODEL"],
        "positive": ["CONDITIONING"],
        "negative": ["CONDITIONING"],
        "latent_image": ["LATENT"],
    }
    nodes = {
        "CheckpointLoaderSimple": _node(
            "Load Checkpoint", "loaders", {"ckpt_name": [models]}, ["MODEL", "CLIP", "VAE"]
        ),
        "LoraLoader": _node(
            "Load LoRA",
            "loaders",
            {
                "model": ["MODEL"],
                "clip": ["CLIP"],
                "lora_name": [loras],
                "strength_model": _STRENGTH,
                "strength_clip": _STRENGTH,
            },
            ["MODEL", "CLIP"],
        ),
        "LoraLoaderModelOnly": _node(
            "LoraLoaderModelOnly",
            "loaders",
            {"model": ["MODEL"], "lora_name": [loras], "strength_model": _STRENGTH},
            ["MODEL"],
        ),
        "CLIPTextEncode": _node(
            "CLIP Text Encode (Prompt)",
            "conditioning",
            {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP"]},
            ["CONDITIONING"],
        ),
        "EmptyLatentImage": _node(
            "Empty Latent Image",
            "latent",
            {
                "width": _SIZE,
                "height": _SIZE,
                "batch_size": ["INT", {"default": 1, "min": 1, "max": MAX_BATCH}],
            },
            ["LATENT"],
        ),
        "KSampler": _node(
            "KSampler",
            "sampling",
            {
                "model": ["MODEL"],
                "seed": _SEED,
                "steps": _STEPS,
                "cfg": _CFG,
                "sampler_name": samplers,
                "scheduler": schedulers,
                **{k: v for k, v in sampling.items() if k != "model"},
                "denoise": _DENOISE,
            },
            ["LATENT"],
        ),
        "KSamplerAdvanced": _node(
            "KSampler (Advanced)",
            "sampling",
            {
                "model": ["MODEL"],
                "add_noise": [["enable", "disable"]],
                "noise_seed": _SEED,
                "steps": _STEPS,
                "cfg": _CFG,
                "sampler_name": samplers,
                "scheduler": schedulers,
                **{k: v for k, v in sampling.items() if k != "model"},
                "start_at_step": ["INT", {"default": 0, "min": 0, "max": 10000}],
                "end_at_step": ["INT", {"default": 10000, "min": 0, "max": 10000}],
                "return_with_leftover_noise": [["disable", "enable"]],
            },
            ["LATENT"],
        ),
        "VAEDecode": _node(
            "VAE Decode", "latent", {"samples": ["LATENT"], "vae": ["VAE"]}, ["IMAGE"]
        ),
        "VAEEncode": _node(
            "VAE Encode", "latent", {"pixels": ["IMAGE"], "vae": ["VAE"]}, ["LATENT"]
        ),
        "VAEEncodeForInpaint": _node(
            "VAE Encode (for Inpainting)",
            "latent/inpaint",
            {
                "pixels": ["IMAGE"],
                "vae": ["VAE"],
                "mask": ["MASK"],
                "grow_mask_by": ["INT", {"default": 6, "min": 0, "max": 64, "step": 1}],
            },
            ["LATENT"],
        ),
        "SetLatentNoiseMask": _node(
            "Set Latent Noise Mask",
            "latent/inpaint",
            {"samples": ["LATENT"], "mask": ["MASK"]},
            ["LATENT"],
        ),
        "LoadImage": _node(
            "Load Image", "image", {"image": [images, {"image_upload": True}]}, ["IMAGE", "MASK"]
        ),
        "LoadImageMask": _node(
            "Load Image (as Mask)",
            "mask",
            {
                "image": [images, {"image_upload": True}],
                "channel": [["alpha", "red", "green", "blue"]],
            },
            ["MASK"],
        ),
        "LatentUpscale": _node(
            "Upscale Latent",
            "latent",
            {
                "samples": ["LATENT"],
                "upscale_method": [list(LATENT_UPSCALE_METHODS)],
                "width": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 8}],
                "height": ["INT", {"default": 512, "min": 0, "max": 16384, "step": 8}],
                "crop": [["disabled", "center"]],
            },
            ["LATENT"],
        ),
        "LatentUpscaleBy": _node(
            "Upscale Latent By",
            "latent",
            {
                "samples": ["LATENT"],
                "upscale_method": [list(LATENT_UPSCALE_METHODS)],
                "scale_by": ["FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01}],
            },
            ["LATENT"],
        ),
        "SaveImage": _node(
            "Save Image",
            "image",
            {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
            [],
            output_node=True,
        ),
        "PreviewImage": _node(
            "Preview Image", "image", {"images": ["IMAGE"]}, [], output_node=True
        ),
    }
    for name, node in nodes.items():
        node["name"] = name
    return nodes


def _node(
    display: str,
    category: str,
    required: dict[str, Any],
    outputs: list[str],
    output_node: bool = False,
) -> dict[str, Any]:
    return {
        "input": {"required": required},
        "input_order": {"required": list(required)},
        "output": outputs,
        "output_is_list": [False] * len(outputs),
        "output_name": outputs,
        "display_name": display,
        "description": "",
        "python_module": "nodes",
        "category": category,
        "output_node": output_node,
    }
