"""Build tiny Stable Diffusion pipelines with random weights.

The model hub is out of reach on CI and laptop demos, so darkroom builds a
real diffusers pipeline from the same constructors the published checkpoints
use, only a few hundred kilobytes large, saves it with `save_pretrained` and
then loads it through the ordinary `from_pretrained` path like any model. It
draws noise, but every part of the stack (tokenizer, text encoder, UNet,
scheduler, VAE, img2img) runs for real.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from worker.random_weights import Architecture, Part, save_pipeline

log = logging.getLogger(__name__)

# A fixed seed makes every build of the tiny model the same weights, so two
# workers that each build it produce byte-identical images for one job.
_WEIGHTS_SEED = 0
_MARKER = "model_index.json"


def ensure_tiny_sd(path: Path, seed: int = _WEIGHTS_SEED) -> Path:
    """Build the tiny pipeline at `path` unless a complete one is already there
    (`seed`: another seed, other weights: another model of the same shape)."""
    if (path / _MARKER).exists():
        return path
    log.info("building tiny-sd (random weights) at %s", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Build next to the target and rename into place: two workers starting at
    # once may both build, but neither ever loads a half-written directory.
    staging = Path(tempfile.mkdtemp(prefix=".tiny-sd-", dir=path.parent))
    try:
        build_tiny_sd(staging, seed)
        try:
            os.rename(staging, path)
        except OSError:
            if not (path / _MARKER).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def build_tiny_sd(path: Path, seed: int = _WEIGHTS_SEED) -> None:
    """Construct a tiny random StableDiffusionPipeline and save it to `path`."""
    save_pipeline(TINY_SD, path, seed)


def _byte_alphabet() -> list[str]:
    """The printable stand-ins CLIP's byte-level BPE uses for the 256 bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in printable:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


_ALPHABET = _byte_alphabet()
_BOS_ID = 2 * len(_ALPHABET)
_EOS_ID = _BOS_ID + 1
_VOCAB_SIZE = _EOS_ID + 1


def _write_byte_vocab(directory: Path) -> tuple[str, str]:
    """Write a character-level CLIP vocabulary (no merges): every text tokenizes."""
    tokens = _ALPHABET + [c + "</w>" for c in _ALPHABET]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab_file = directory / "vocab.json"
    merges_file = directory / "merges.txt"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}))
    merges_file.write_text("#version: 0.2\n")
    return str(vocab_file), str(merges_file)


def _byte_tokenizer() -> Any:
    """CLIP's tokenizer over single characters: any prompt a user types tokenizes."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as vocab_dir:
        return CLIPTokenizer(*_write_byte_vocab(Path(vocab_dir)), model_max_length=77)


# Tests compare images drawn from these weights: a changed size, or the models in
# another order, is another model (tests/worker/test_random_weights.py builds it).
TINY_SD = Architecture(
    pipeline="StableDiffusionPipeline",
    models={
        "unet": Part(
            "UNet2DConditionModel",
            {
                "sample_size": 8,
                "in_channels": 4,
                "out_channels": 4,
                "block_out_channels": (32, 64),
                "layers_per_block": 1,
                "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
                "cross_attention_dim": 32,
                "attention_head_dim": 4,
                "norm_num_groups": 8,
            },
        ),
        # Four blocks give the VAE the same 8x down-scaling as real SD checkpoints,
        # so sizes, latents and "multiple of 8" limits behave as in production.
        "vae": Part(
            "AutoencoderKL",
            {
                "in_channels": 3,
                "out_channels": 3,
                "block_out_channels": (8, 8, 16, 16),
                "down_block_types": ("DownEncoderBlock2D",) * 4,
                "up_block_types": ("UpDecoderBlock2D",) * 4,
                "latent_channels": 4,
                "layers_per_block": 1,
                "norm_num_groups": 8,
                "sample_size": 64,
            },
        ),
        "text_encoder": Part(
            "CLIPTextModel",
            {
                "vocab_size": _VOCAB_SIZE,
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "max_position_embeddings": 77,
                "bos_token_id": _BOS_ID,
                "eos_token_id": _EOS_ID,
                "pad_token_id": _EOS_ID,
            },
            library="transformers",
        ),
    },
    scheduler=Part(
        "EulerDiscreteScheduler",
        {
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000,
            "steps_offset": 1,
        },
    ),
    tokenizers={"tokenizer": _byte_tokenizer},
    options={"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False},
)
