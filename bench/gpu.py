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
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if not __package__:
    # Run as a script (python bench/gpu.py): its folder is on sys.path, not the repository.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.gpu_models import PROMPT, PUBLISHED_PARAMS, SPECS, ModelSpec, build
from bench.gpu_worker import MEMORY_VARIANTS, measure_worker_rows, worker_table
from worker.random_weights import build_pipeline

RESULTS_DIR = Path(__file__).resolve().parent / "results"
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
    worst = 0.0
    for key, spec in SPECS.items():
        pipe = build_pipeline(spec.architecture(False), device="meta")
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
        specs = [replace(s, dtype_name="float32") for s in specs]
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
