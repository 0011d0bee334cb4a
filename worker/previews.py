"""Live previews from a running call's latents: what the engine computes (torch side).

Three ways from latents to a picture, per registry entry (`preview_decoder`):

- a fixed linear projection of the latent channels to RGB (the default; no
  weights, a few microseconds): the coefficients each latent space is known by
  (SD 1.x/2.x, SDXL, SD3, FLUX), as ComfyUI and A1111 use them;
- a TAESD-family tiny decoder (diffusers AutoencoderTiny) at a local path: a
  sharp picture for ~1 M parameters;
- "vae": the model's own VAE, exact and as costly as the final decode.

The engine calls a CallPreviews after each step; it makes a preview only of the
requests someone watches (the worker says which) and at most every interval.
The decode runs on the device; WebP encoding runs on a thread of its own, so
the next step is not held up by it (a preview still encoding skips the next).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image

from shared.previews import MAX_PREVIEW_SIDE
from worker.call_types import Request
from worker.loader import LoadedModel

log = logging.getLogger(__name__)

# (factors per latent channel as [R, G, B], bias) for each latent space, from
# ComfyUI's comfy/latent_formats.py (SD15, SDXL, SD3, Flux). They map the latents
# the pipeline samples in (scaled, and shifted for SD3 and FLUX) to RGB in [-1, 1].
LATENT_RGB: dict[str, tuple[list[list[float]], list[float] | None]] = {
    "sd": (
        [
            [0.3512, 0.2297, 0.3227],
            [0.3250, 0.4974, 0.2350],
            [-0.2829, 0.1762, 0.2721],
            [-0.2120, -0.2616, -0.7177],
        ],
        None,
    ),
    "sdxl": (
        [
            [0.3651, 0.4232, 0.4341],
            [-0.2533, -0.0042, 0.1068],
            [0.1076, 0.1111, -0.0362],
            [-0.3165, -0.2492, -0.2188],
        ],
        [0.1084, -0.0175, -0.0011],
    ),
    "sd3": (
        [
            [-0.0922, -0.0175, 0.0749],
            [0.0311, 0.0633, 0.0954],
            [0.1994, 0.0927, 0.0458],
            [0.0856, 0.0339, 0.0902],
            [0.0587, 0.0272, -0.0496],
            [-0.0006, 0.1104, 0.0309],
            [0.0978, 0.0306, 0.0427],
            [-0.0042, 0.1038, 0.1358],
            [-0.0194, 0.0020, 0.0669],
            [-0.0488, 0.0130, -0.0268],
            [0.0922, 0.0988, 0.0951],
            [-0.0278, 0.0524, -0.0542],
            [0.0332, 0.0456, 0.0895],
            [-0.0069, -0.0030, -0.0810],
            [-0.0596, -0.0465, -0.0293],
            [-0.1448, -0.1463, -0.1189],
        ],
        [0.2394, 0.2135, 0.1925],
    ),
    "flux": (
        [
            [-0.0346, 0.0244, 0.0681],
            [0.0034, 0.0210, 0.0687],
            [0.0275, -0.0668, -0.0433],
            [-0.0174, 0.0160, 0.0617],
            [0.0859, 0.0721, 0.0329],
            [0.0004, 0.0383, 0.0115],
            [0.0405, 0.0861, 0.0915],
            [-0.0236, -0.0185, -0.0259],
            [-0.0245, 0.0250, 0.1180],
            [0.1008, 0.0755, -0.0421],
            [-0.0515, 0.0201, 0.0011],
            [0.0428, -0.0012, -0.0036],
            [0.0817, 0.0765, 0.0749],
            [-0.1264, -0.0522, -0.1103],
            [-0.0280, -0.0881, -0.0499],
            [-0.1262, -0.0982, -0.0778],
        ],
        [-0.0329, -0.0718, -0.0851],
    ),
}
# Types without factors of their own, by the latent space they sample in.
_SPACE_BY_CHANNELS = {4: "sd", 16: "sd3"}

# latents (as the pipeline holds them, one row per image) and the image size ->
# RGB in [0, 1], [N, 3, H, W], on the latents' device.
Decoder = Callable[[Any, torch.Tensor, int, int], torch.Tensor]


def preview_decoder(model: LoadedModel) -> Decoder:
    """How `model`'s previews are made (its registry entry's `preview_decoder`)."""
    choice = model.entry.preview_decoder
    if choice == "vae":
        return _vae_decode
    if choice is not None:
        return _TinyDecoder(choice)
    return _linear_for(model.entry.type)


def spatial_latents(pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """[N, C, h, w] latents: FLUX packs them into [N, tokens, C*4] (2x2 patches)."""
    if latents.ndim == 3 and hasattr(pipe, "_unpack_latents"):
        return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)  # type: ignore[no-any-return]
    return latents


def _linear_for(model_type: str) -> Decoder:
    def decode(pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        spatial = spatial_latents(pipe, latents, height, width)
        factors, bias = _factors(model_type, spatial.shape[1], spatial)
        rgb = torch.einsum("nchw,cr->nrhw", spatial.to(factors.dtype), factors)
        if bias is not None:
            rgb = rgb + bias.view(1, 3, 1, 1)
        return ((rgb + 1) / 2).clamp(0, 1)

    return decode


def _factors(
    model_type: str, channels: int, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    space = model_type if model_type in LATENT_RGB else _SPACE_BY_CHANNELS.get(channels)
    if space is None or len(LATENT_RGB[space][0]) != channels:
        raise PreviewUnavailable(
            f"no latent-to-RGB factors for {channels}-channel {model_type} latents; "
            "set the model's preview_decoder"
        )
    factors, bias = LATENT_RGB[space]
    dtype = torch.float32
    return (
        torch.tensor(factors, dtype=dtype, device=like.device),
        torch.tensor(bias, dtype=dtype, device=like.device) if bias is not None else None,
    )


def _vae_decode(pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return _decode_with(pipe.vae, pipe, latents, height, width)


def _decode_with(
    vae: Any, pipe: Any, latents: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Decode as the pipeline's last step does: unscaled (and unshifted) by `vae`'s config."""
    spatial = spatial_latents(pipe, latents, height, width)
    config = vae.config
    spatial = spatial / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
    image: torch.Tensor = vae.decode(spatial.to(vae.dtype), return_dict=False)[0]
    return ((image.float() + 1) / 2).clamp(0, 1)


class _TinyDecoder:
    """A TAESD-family decoder from a local directory, loaded on first use onto the
    device and dtype of the latents it decodes."""

    def __init__(self, path: str):
        self.path = path
        self._vae: Any = None
        self._lock = threading.Lock()

    def __call__(self, pipe: Any, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        return _decode_with(self._load(latents), pipe, latents, height, width)

    def _load(self, like: torch.Tensor) -> Any:
        with self._lock:
            if self._vae is None:
                from diffusers import AutoencoderTiny

                vae = AutoencoderTiny.from_pretrained(self.path)  # type: ignore[no-untyped-call]
                dtype = like.dtype if like.dtype in (torch.float16, torch.bfloat16) else None
                self._vae = vae.to(like.device, dtype=dtype or torch.float32).eval()
                log.info("preview decoder loaded from %s", self.path)
            return self._vae


class PreviewUnavailable(Exception):
    """This model's previews cannot be made (said once; the job runs on without)."""


def preview_size(width: int, height: int) -> tuple[int, int]:
    """The preview's size: the image's, scaled down to MAX_PREVIEW_SIDE on its long side."""
    scale = min(1.0, MAX_PREVIEW_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_pixels(rgb: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """[N, 3, h, w] RGB in [0, 1] -> [N, H, W, 3] uint8 at the preview's size."""
    target_w, target_h = preview_size(width, height)
    if rgb.shape[-2:] != (target_h, target_w):
        rgb = torch.nn.functional.interpolate(
            rgb.float(), size=(target_h, target_w), mode="bilinear", align_corners=False
        )
    return (rgb * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def encode_webp(pixels: Any) -> bytes:
    """One preview ([H, W, 3] uint8, on the CPU) as WebP."""
    buffer = io.BytesIO()
    Image.fromarray(pixels.numpy()).save(buffer, format="WEBP", quality=80, method=0)
    return buffer.getvalue()


# (step, steps, {request index: [WebP per image]}, seconds it took)
PreviewSink = Callable[[int, int, dict[int, list[bytes]], float], None]


class CallPreviews:
    """The step hook of one pipeline call: previews of the requests `wanted()` names
    (a bit mask of request indexes), at most every `interval_s`, to `sink`."""

    def __init__(
        self,
        decoder: Decoder,
        counts: list[int],
        size: tuple[int, int],
        interval_s: float,
        wanted: Callable[[], int],
        sink: PreviewSink,
        encoder: PreviewEncoder,
    ):
        self.decoder = decoder
        self.counts = counts
        self.width, self.height = size
        self.interval_s = interval_s
        self.wanted = wanted
        self.sink = sink
        self.encoder = encoder
        self._last = float("-inf")
        self.made = 0

    def __call__(self, pipe: Any, done: int, total: int, latents: torch.Tensor) -> None:
        mask = self.wanted()
        now = time.monotonic()
        if not mask or now - self._last < self.interval_s or self.encoder.busy:
            return
        self._last = now
        rows, owners = self._rows(mask)
        if not rows:
            return
        began = time.perf_counter()
        try:
            with torch.inference_mode():
                rgb = self.decoder(pipe, latents[rows], self.height, self.width)
                pixels = to_pixels(rgb, self.width, self.height)
        except PreviewUnavailable as exc:
            self.wanted = lambda: 0  # the same for every step: said once
            log.warning("no previews for this call: %s", exc)
            return
        except Exception:
            log.exception("a preview at step %d failed; the job runs on", done)
            return
        self.made += 1
        self.encoder.submit(pixels, owners, done, total, began, self.sink)

    def _rows(self, mask: int) -> tuple[list[int], list[int]]:
        """The latent rows of the watched requests, and the request each belongs to."""
        rows: list[int] = []
        owners: list[int] = []
        start = 0
        for index, count in enumerate(self.counts):
            if mask >> index & 1:
                rows += range(start, start + count)
                owners += [index] * count
            start += count
        return rows, owners


class PreviewMaker:
    """Makes the latents hook of each call: one decoder per model (a TAESD loads
    once), one encoder thread for all."""

    def __init__(self, interval_s: float):
        self.interval_s = interval_s
        self.encoder = PreviewEncoder()
        self._decoders: dict[str, Decoder] = {}

    def for_call(
        self,
        model: LoadedModel,
        requests: list[Request],
        wanted: Callable[[], int],
        sink: PreviewSink,
    ) -> CallPreviews | None:
        """The hook of a call of `requests` on `model` (None: none can be made; a
        preview never fails a job)."""
        try:
            if model.name not in self._decoders:
                self._decoders[model.name] = preview_decoder(model)
            first = requests[0].params
            return CallPreviews(
                self._decoders[model.name],
                [request.params.num_images for request in requests],
                (first.width, first.height),
                self.interval_s,
                wanted,
                sink,
                self.encoder,
            )
        except Exception:
            log.exception("no previews for this call")
            return None


class PreviewEncoder:
    """Encodes previews on a thread of its own: the device's next step need not wait
    for WebP. One at a time; while one encodes, new previews are skipped."""

    def __init__(self) -> None:
        self._busy = threading.Event()

    @property
    def busy(self) -> bool:
        return self._busy.is_set()

    def submit(
        self,
        pixels: torch.Tensor,
        owners: list[int],
        step: int,
        steps: int,
        began: float,
        sink: PreviewSink,
    ) -> None:
        # Copied off the device without waiting: the thread waits for the copy.
        host = pixels.to("cpu", non_blocking=True)
        ready = None
        if pixels.device.type == "cuda":
            ready = torch.cuda.Event()  # type: ignore[no-untyped-call]
            ready.record()
        self._busy.set()
        threading.Thread(
            target=self._encode,
            args=(host, ready, owners, step, steps, began, sink),
            name="preview-encoder",
            daemon=True,
        ).start()

    def _encode(
        self,
        host: torch.Tensor,
        ready: Any,
        owners: list[int],
        step: int,
        steps: int,
        began: float,
        sink: PreviewSink,
    ) -> None:
        """WebP of each row of `host`, once the device's copy (`ready`) is done."""
        try:
            if ready is not None:
                ready.synchronize()
            images: dict[int, list[bytes]] = {}
            for owner, pixels in zip(owners, host, strict=True):
                images.setdefault(owner, []).append(encode_webp(pixels))
            sink(step, steps, images, time.perf_counter() - began)
        except Exception:
            log.exception("encoding a preview failed")
        finally:
            self._busy.clear()
