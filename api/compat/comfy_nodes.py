"""GET /object_info: the ComfyUI nodes darkroom runs, as ComfyUI describes its own.

Clients read it to fill their pickers: Open WebUI lists the checkpoints from
`CheckpointLoaderSimple`'s `ckpt_name`, ComfyUI's front end builds its nodes
from it. Only the nodes darkroom translates are listed (api.compat.comfy_workflow),
with the registry's models, the key's LoRA adapters and the samplers and
schedulers darkroom can run, by ComfyUI's names.
"""

from __future__ import annotations

import copy
from typing import Any

from api.compat.comfy_names import LATENT_UPSCALE_METHODS, SAMPLERS, SCHEDULERS
from api.compat.comfy_workflow import MAX_BATCH, MAX_COMFY_SEED

# Where a node's list of choices is filled in per call (the registry's models, the
# key's adapters, its uploads).
MODELS, LORAS, IMAGES = "<models>", "<loras>", "<images>"

_SIZE = ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}]
_SEED = ["INT", {"default": 0, "min": 0, "max": MAX_COMFY_SEED, "control_after_generate": True}]
_STEPS = ["INT", {"default": 20, "min": 1, "max": 10000}]
_CFG = ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}]
_DENOISE = ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}]
_STRENGTH = ["FLOAT", {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}]
_UPSCALED = ["INT", {"default": 512, "min": 0, "max": 16384, "step": 8}]
_CONDITIONED = {"positive": ["CONDITIONING"], "negative": ["CONDITIONING"]}
_CHOICE_OF_SAMPLER = {"sampler_name": [list(SAMPLERS)], "scheduler": [list(SCHEDULERS)]}

# name: (display name, category, required inputs, outputs, output node)
_NODES: dict[str, tuple[str, str, dict[str, Any], list[str], bool]] = {
    "CheckpointLoaderSimple": (
        "Load Checkpoint",
        "loaders",
        {"ckpt_name": [MODELS]},
        ["MODEL", "CLIP", "VAE"],
        False,
    ),
    "LoraLoader": (
        "Load LoRA",
        "loaders",
        {
            "model": ["MODEL"],
            "clip": ["CLIP"],
            "lora_name": [LORAS],
            "strength_model": _STRENGTH,
            "strength_clip": _STRENGTH,
        },
        ["MODEL", "CLIP"],
        False,
    ),
    "LoraLoaderModelOnly": (
        "LoraLoaderModelOnly",
        "loaders",
        {"model": ["MODEL"], "lora_name": [LORAS], "strength_model": _STRENGTH},
        ["MODEL"],
        False,
    ),
    "CLIPTextEncode": (
        "CLIP Text Encode (Prompt)",
        "conditioning",
        {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}], "clip": ["CLIP"]},
        ["CONDITIONING"],
        False,
    ),
    "EmptyLatentImage": (
        "Empty Latent Image",
        "latent",
        {
            "width": _SIZE,
            "height": _SIZE,
            "batch_size": ["INT", {"default": 1, "min": 1, "max": MAX_BATCH}],
        },
        ["LATENT"],
        False,
    ),
    "KSampler": (
        "KSampler",
        "sampling",
        {
            "model": ["MODEL"],
            "seed": _SEED,
            "steps": _STEPS,
            "cfg": _CFG,
            **_CHOICE_OF_SAMPLER,
            **_CONDITIONED,
            "latent_image": ["LATENT"],
            "denoise": _DENOISE,
        },
        ["LATENT"],
        False,
    ),
    "KSamplerAdvanced": (
        "KSampler (Advanced)",
        "sampling",
        {
            "model": ["MODEL"],
            "add_noise": [["enable", "disable"]],
            "noise_seed": _SEED,
            "steps": _STEPS,
            "cfg": _CFG,
            **_CHOICE_OF_SAMPLER,
            **_CONDITIONED,
            "latent_image": ["LATENT"],
            "start_at_step": ["INT", {"default": 0, "min": 0, "max": 10000}],
            "end_at_step": ["INT", {"default": 10000, "min": 0, "max": 10000}],
            "return_with_leftover_noise": [["disable", "enable"]],
        },
        ["LATENT"],
        False,
    ),
    "VAEDecode": (
        "VAE Decode",
        "latent",
        {"samples": ["LATENT"], "vae": ["VAE"]},
        ["IMAGE"],
        False,
    ),
    "VAEEncode": ("VAE Encode", "latent", {"pixels": ["IMAGE"], "vae": ["VAE"]}, ["LATENT"], False),
    "VAEEncodeForInpaint": (
        "VAE Encode (for Inpainting)",
        "latent/inpaint",
        {
            "pixels": ["IMAGE"],
            "vae": ["VAE"],
            "mask": ["MASK"],
            "grow_mask_by": ["INT", {"default": 6, "min": 0, "max": 64, "step": 1}],
        },
        ["LATENT"],
        False,
    ),
    "SetLatentNoiseMask": (
        "Set Latent Noise Mask",
        "latent/inpaint",
        {"samples": ["LATENT"], "mask": ["MASK"]},
        ["LATENT"],
        False,
    ),
    "LoadImage": (
        "Load Image",
        "image",
        {"image": [IMAGES, {"image_upload": True}]},
        ["IMAGE", "MASK"],
        False,
    ),
    "LoadImageMask": (
        "Load Image (as Mask)",
        "mask",
        {
            "image": [IMAGES, {"image_upload": True}],
            "channel": [["alpha", "red", "green", "blue"]],
        },
        ["MASK"],
        False,
    ),
    "LatentUpscale": (
        "Upscale Latent",
        "latent",
        {
            "samples": ["LATENT"],
            "upscale_method": [list(LATENT_UPSCALE_METHODS)],
            "width": _UPSCALED,
            "height": _UPSCALED,
            "crop": [["disabled", "center"]],
        },
        ["LATENT"],
        False,
    ),
    "LatentUpscaleBy": (
        "Upscale Latent By",
        "latent",
        {
            "samples": ["LATENT"],
            "upscale_method": [list(LATENT_UPSCALE_METHODS)],
            "scale_by": ["FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01}],
        },
        ["LATENT"],
        False,
    ),
    "SaveImage": (
        "Save Image",
        "image",
        {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
        [],
        True,
    ),
    "PreviewImage": ("Preview Image", "image", {"images": ["IMAGE"]}, [], True),
}


def object_info(models: list[str], loras: list[str], images: list[str]) -> dict[str, Any]:
    """Every node darkroom runs, its choices filled in for this caller."""
    choices = {MODELS: models, LORAS: loras, IMAGES: images}
    nodes = {}
    for name, (display, category, required, outputs, output_node) in _NODES.items():
        inputs = {
            key: [choices.get(spec[0], spec[0]) if isinstance(spec[0], str) else spec[0], *spec[1:]]
            for key, spec in copy.deepcopy(required).items()
        }
        nodes[name] = {
            "input": {"required": inputs},
            "input_order": {"required": list(inputs)},
            "output": outputs,
            "output_is_list": [False] * len(outputs),
            "output_name": outputs,
            "name": name,
            "display_name": display,
            "description": "",
            "python_module": "nodes",
            "category": category,
            "output_node": output_node,
        }
    return nodes
