"""Row: LoRA adapters (`--only lora`; docs/models.md, "LoRA adapters").

1. Swap times, in a process of its own holding tiny-sd and its adapter cache
   (worker.adapters, the code a worker runs), over 20 adapters made with PEFT:
   warm (the adapter is loaded: activating it is `set_adapters`), from host
   memory (its weights kept there, loaded into the pipeline again) and cold
   (read from its file). Target: warm p50 and p99 under 50 ms.
2. Memory: 1,000 swaps over the 20 adapters with room on the device for 5, so
   adapters keep being loaded and deleted; the process's resident memory after
   the first 20 swaps and after all 1,000. Target: within 2 %.
3. Throughput through the real stack (API, one worker): rounds of jobs that use
   10 adapters in turn against the same jobs on one adapter. Target: >= 0.9.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from bench.common import Result, Settings, median, percentile, run_python, verdict
from bench.jobs import BatchRun, job_bodies, run_batch_checked
from bench.stack import MODEL, REPO_ROOT, Stack

ADAPTERS = 20
ROUND_ROBIN = 10
SWAPS = 1000
WARM_TARGET_MS = 50.0
MEMORY_TOLERANCE = 0.02
THROUGHPUT_TARGET = 0.9

# Run in a child process: its memory is the adapters' and the model's alone.
_SWAPS_CODE = """
import hashlib, json, os, sys, time
from pathlib import Path
import torch
from shared.loras import ResolvedLora
from shared.registry import load_registry
from worker.adapters import AdapterCache, AdapterSource
from worker.loader import load_model

torch.set_num_threads(1)
registry, files, swaps = load_registry(Path(sys.argv[1])), json.loads(sys.argv[2]), int(sys.argv[3])
def pipe():
    entry = registry.models["tiny-sd"]
    return load_model("tiny-sd", entry, registry.runtime.memory, "cpu").txt2img

loras = [
    ResolvedLora(name=f"a{i}", scale=1.0, sha256=hashlib.sha256(Path(f).read_bytes()).hexdigest(),
                 kind="file", source=f)
    for i, f in enumerate(files)
]
size = os.path.getsize(files[0])

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def timed(cache, lora):
    start = time.perf_counter(); cache.activate([lora])
    return (time.perf_counter() - start) * 1000

out = {}
# Room for every adapter: after one load each, a swap is set_adapters (warm).
roomy = AdapterCache(pipe(), AdapterSource(None))
out["cold_ms"] = [timed(roomy, l) for l in loras]
out["warm_ms"] = [timed(roomy, loras[i % len(loras)]) for i in range(200)]
del roomy
# Room for 5 on the device, every adapter's weights kept in host memory.
tight = AdapterCache(pipe(), AdapterSource(None),
                     over_budget=lambda extra: tight.device_bytes + extra - 5 * size,
                     host_room=lambda: 1 << 40)
for l in loras:
    timed(tight, l)
out["host_ms"] = [timed(tight, loras[(i * 7) % len(loras)]) for i in range(200)]
# Memory: 1,000 swaps, none of them warm on the device for long.
del tight
small = AdapterCache(pipe(), AdapterSource(None),
                     over_budget=lambda extra: small.device_bytes + extra - 5 * size)
for l in loras:
    timed(small, l)
import gc; gc.collect()
out["rss_after_first"] = rss()
for i in range(swaps):
    timed(small, loras[(i * 7) % len(loras)])
gc.collect()
out["rss_after_all"] = rss()
out["loads"] = small.loads
print(json.dumps(out))
"""


def measure_lora(stack: Stack, cfg: Settings) -> Result:
    files = _adapters(stack)
    registry = _registry(stack, files)
    swaps = _swaps(registry, files)
    throughput = _throughput(stack, cfg, registry)
    warm_p50, warm_p99 = percentile(swaps["warm_ms"], 50), percentile(swaps["warm_ms"], 99)
    growth = swaps["rss_after_all"] / swaps["rss_after_first"] - 1
    ratio = throughput["ratio"]
    ok = (
        warm_p99 < WARM_TARGET_MS and abs(growth) <= MEMORY_TOLERANCE and ratio >= THROUGHPUT_TARGET
    )
    return Result(
        name="lora",
        measured=(
            f"warm swap p50 {warm_p50:.2f} ms, p99 {warm_p99:.2f} ms; from host p50 "
            f"{percentile(swaps['host_ms'], 50):.1f} ms; cold p50 "
            f"{percentile(swaps['cold_ms'], 50):.1f} ms; memory over {SWAPS} swaps "
            f"{growth * 100:+.2f} %; {ROUND_ROBIN} adapters round robin {ratio:.3f}x one"
        ),
        target=(
            f"warm p99 < {WARM_TARGET_MS:g} ms; memory within {MEMORY_TOLERANCE:.0%}; "
            f">= {THROUGHPUT_TARGET}x"
        ),
        status=verdict(ok),
        details={"swaps": swaps, "throughput": throughput},
        notes=[
            f"{ADAPTERS} PEFT adapters (rank 4, UNet attention) of "
            f"{files[0].stat().st_size / 1e3:.0f} kB on {MODEL}, CPU, one thread; swap = "
            "activating another adapter than the call before's (warm: it is loaded, one "
            "set_adapters); from host: weights in host memory, "
            "loaded into the pipeline again; memory: resident set of the process, "
            f"{SWAPS} swaps with room for 5 adapters on the device "
            f"({swaps['loads']['source']} loads from file): "
            f"{swaps['rss_after_first'] / 2**20:.1f} MiB after the first 20, "
            f"{swaps['rss_after_all'] / 2**20:.1f} MiB after all",
            f"throughput: {cfg.jobs} jobs a round, {cfg.repeats} rounds each way, one worker; "
            f"{throughput['round_robin_jobs_per_s']:.1f} jobs/s over {ROUND_ROBIN} adapters vs "
            f"{throughput['one_adapter_jobs_per_s']:.1f} on one",
        ],
    )


def _adapters(stack: Stack) -> list[Path]:
    root = stack.workdir / "loras"
    code = (
        "import sys; from pathlib import Path; from worker.tiny_lora import make_sd_lora; "
        f"root = Path({str(root)!r}); tiny = Path({str(stack.model_path)!r}); "
        f"[make_sd_lora(tiny, root / f'a{{i}}.safetensors', seed=i) for i in range({ADAPTERS})]"
    )
    run_python("lora", code)
    return [root / f"a{i}.safetensors" for i in range(ADAPTERS)]


def _registry(stack: Stack, files: list[Path]) -> Path:
    raw = yaml.safe_load((REPO_ROOT / "model_config.yaml").read_text())
    raw["models"][MODEL]["id"] = str(stack.model_path)
    raw["models"][MODEL]["params"]["max_loras"] = 1
    raw["loras"] = {f.stem: {"source": str(f), "base": "sd"} for f in files}
    path = stack.workdir / "model_config.lora.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _swaps(registry: Path, files: list[Path]) -> dict[str, Any]:
    answer = run_python(
        "lora", _SWAPS_CODE, str(registry), json.dumps([str(f) for f in files]), str(SWAPS)
    )
    return dict(json.loads(answer.strip().splitlines()[-1]))


def _throughput(stack: Stack, cfg: Settings, registry: Path) -> dict[str, Any]:
    env = {"MODEL_CONFIG": str(registry)}
    api_url, api = stack.start_uvicorn("api-lora", "api.main:app", extra_env=env)
    stack.start_workers(1, torch_threads=cfg.queue_threads, extra_env=env)
    one: list[BatchRun] = []
    spread: list[BatchRun] = []
    try:
        bodies = job_bodies(cfg.jobs)
        run_batch_checked(
            api_url,
            [{**b, "loras": [{"name": f"a{i % ROUND_ROBIN}"}]} for i, b in enumerate(bodies)],
        )
        for r in range(cfg.repeats):
            bodies = job_bodies(cfg.jobs, offset=(r + 1) * 10_000)
            rounds = [
                (one, [{**b, "loras": [{"name": "a0"}]} for b in bodies]),
                (
                    spread,
                    [
                        {**b, "loras": [{"name": f"a{i % ROUND_ROBIN}"}]}
                        for i, b in enumerate(bodies)
                    ],
                ),
            ]
            # Each way first in every other repeat: no order effect favours one.
            for runs, jobs in rounds if r % 2 == 0 else rounds[::-1]:
                runs.append(run_batch_checked(api_url, jobs))
    finally:
        stack.stop_workers()
        stack.stop_child(api)
        stack.flush()
    rate_one = median([r.jobs_per_s for r in one])
    rate_spread = median([r.jobs_per_s for r in spread])
    return {
        "one_adapter_jobs_per_s": rate_one,
        "round_robin_jobs_per_s": rate_spread,
        "ratio": rate_spread / rate_one,
        "rounds": {"one": [r.summary() for r in one], "round_robin": [r.summary() for r in spread]},
    }
