"""worker/random_weights.py: one seed, one set of weights; "meta" builds shapes only."""

from __future__ import annotations

import torch

from worker.random_weights import build_pipeline
from worker.tiny import TINY_SD


def _weights(seed: int) -> dict[str, torch.Tensor]:
    return dict(build_pipeline(TINY_SD, seed).unet.state_dict())


def test_a_seed_draws_the_same_weights_every_build_and_another_seed_others() -> None:
    first, again, other = _weights(1), _weights(1), _weights(2)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_a_meta_build_has_shapes_but_a_real_scheduler() -> None:
    pipe = build_pipeline(TINY_SD, device="meta", dtype=torch.float16)
    assert all(p.is_meta and p.dtype == torch.float16 for p in pipe.unet.parameters())
    # The scheduler's tables are numbers the pipeline reads, whatever the models are built as.
    assert pipe.scheduler.sigmas.device.type == "cpu"
    assert pipe.scheduler.sigmas.dtype == torch.float32
    assert torch.get_default_dtype() == torch.float32  # the build put the default back
