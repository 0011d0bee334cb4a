"""Open WebUI's ComfyUI engine, as it calls ComfyUI: its default text-to-image workflow
and the way it fills the workflow's nodes in.

Vendored from open-webui/open-webui (backend/open_webui/config.py
COMFYUI_DEFAULT_WORKFLOW, and backend/open_webui/utils/images/comfyui.py
_apply_workflow_nodes and _ws_get_images), at commit 02530d5 (2026). Open WebUI
ships no default image-edit workflow (IMAGES_EDIT_COMFYUI_WORKFLOW is empty
unless configured). The node map is the one its admin page fills in by default
for this workflow.
"""

from __future__ import annotations

import json
import random
from typing import Any

DEFAULT_WORKFLOW = """
{
  "3": {
    "inputs": {
      "seed": 0,
      "steps": 20,
      "cfg": 8,
      "sampler_name": "euler",
      "scheduler": "normal",
      "denoise": 1,
      "model": ["4", 0],
      "positive": ["6", 0],
      "negative": ["7", 0],
      "latent_image": ["5", 0]
    },
    "class_type": "KSampler",
    "_meta": {"title": "KSampler"}
  },
  "4": {
    "inputs": {"ckpt_name": "model.safetensors"},
    "class_type": "CheckpointLoaderSimple",
    "_meta": {"title": "Load Checkpoint"}
  },
  "5": {
    "inputs": {"width": 512, "height": 512, "batch_size": 1},
    "class_type": "EmptyLatentImage",
    "_meta": {"title": "Empty Latent Image"}
  },
  "6": {
    "inputs": {"text": "Prompt", "clip": ["4", 1]},
    "class_type": "CLIPTextEncode",
    "_meta": {"title": "CLIP Text Encode (Prompt)"}
  },
  "7": {
    "inputs": {"text": "", "clip": ["4", 1]},
    "class_type": "CLIPTextEncode",
    "_meta": {"title": "CLIP Text Encode (Prompt)"}
  },
  "8": {
    "inputs": {"samples": ["3", 0], "vae": ["4", 2]},
    "class_type": "VAEDecode",
    "_meta": {"title": "VAE Decode"}
  },
  "9": {
    "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]},
    "class_type": "SaveImage",
    "_meta": {"title": "Save Image"}
  }
}
"""

# Open WebUI's default node map for the workflow above (type, key, node ids).
DEFAULT_NODES: list[dict[str, Any]] = [
    {"type": "prompt", "key": "text", "node_ids": ["6"]},
    {"type": "model", "key": "ckpt_name", "node_ids": ["4"]},
    {"type": "width", "key": "width", "node_ids": ["5"]},
    {"type": "height", "key": "height", "node_ids": ["5"]},
    {"type": "steps", "key": "steps", "node_ids": ["3"]},
    {"type": "seed", "key": "seed", "node_ids": ["3"]},
]


def workflow_for(
    model: str, prompt: str, width: int, height: int, steps: int, seed: int | None = None
) -> dict[str, Any]:
    """The workflow Open WebUI posts: its default, its nodes filled in as
    _apply_workflow_nodes fills them (a missing seed: random up to 2^50, as it draws)."""
    workflow = json.loads(DEFAULT_WORKFLOW)
    values = {"prompt": prompt, "model": model, "width": width, "height": height, "steps": steps}
    for node in DEFAULT_NODES:
        for node_id in node["node_ids"]:
            if node["type"] == "seed":
                value: Any = seed if seed else random.randint(0, 1125899906842624)
            else:
                value = values[node["type"]]
            workflow[node_id]["inputs"][node["key"]] = value
    return workflow
