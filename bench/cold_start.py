"""Row 6: worker spawn-to-ready vs a bare from_pretrained in a fresh Python process.

What each number includes (all wall clock, this machine, page cache warm
after one unmeasured run of each):

worker spawn -> ready
    Popen of `python -m celery -A worker.celery_app worker ...` until its
    Redis record says state == "ready" (polled every 10 ms): interpreter
    start, importing celery, torch, diffusers and darkroom, settings and
    registry, the Redis connection and heartbeat, load_model (from_pretrained
    of the txt2img pipeline, the img2img pipeline from_pipe, VAE slicing,
    .to("cpu")), then Celery's consumer start-up up to its worker_ready signal.
bare spawn -> loaded
    Popen of `python -c "...from diffusers import StableDiffusionPipeline;
    StableDiffusionPipeline.from_pretrained(path)..."` until the child's own
    time.time() right after from_pretrained returned (printed by the child):
    interpreter start, importing diffusers (and torch), from_pretrained.
    The ratio uses this one.
bare whole process
    The same Popen to exit: adds the interpreter's teardown.
bare in-script
    The number the one-liner prints: import + from_pretrained only (no
    interpreter start).
in-process load
    load_model in a process that already imported everything and loaded the
    model once: what a reload costs without any start-up.
"""

from __future__ import annotations

import subprocess
import sys
import time

from bench.common import DirectRunner, Result, Settings, median, verdict
from bench.stack import REPO_ROOT, BenchError, Stack, prepare_model

RATIO_TARGET = 1.2

_BARE = (
    "import time; t = time.time(); "
    "from diffusers import StableDiffusionPipeline; "
    "StableDiffusionPipeline.from_pretrained({path!r}); "
    "print(time.time() - t, time.time())"
)


def measure_cold_start(stack: Stack, cfg: Settings) -> Result:
    path = str(stack.model_path or prepare_model())
    bare: list[dict[str, float]] = []
    worker: list[float] = []
    # One unmeasured run of each first: the page cache then holds the same files for both.
    for index in range(cfg.cold_repeats + 1):
        sample = _bare(stack, path)
        ready = _worker(stack)
        if index:
            bare.append(sample)
            worker.append(ready)
    with DirectRunner(stack, threads=1, warmup=1) as direct:
        first_load, reload = direct.ready["load_s"]
    stack.flush()
    spawn_to_loaded = median([b["spawn_to_loaded_s"] for b in bare])
    whole = median([b["process_s"] for b in bare])
    in_script = median([b["in_script_s"] for b in bare])
    ready_s = median(worker)
    ratio = ready_s / spawn_to_loaded
    return Result(
        name="cold start",
        measured=(
            f"worker spawn->ready {ready_s:.2f} s vs bare spawn->loaded {spawn_to_loaded:.2f} s "
            f"= {ratio:.2f}"
        ),
        target=f"<= {RATIO_TARGET}",
        status=verdict(ratio <= RATIO_TARGET),
        details={
            "repeats": cfg.cold_repeats,
            "worker_spawn_to_ready_s": round(ready_s, 3),
            "bare_spawn_to_loaded_s": round(spawn_to_loaded, 3),
            "bare_whole_process_s": round(whole, 3),
            "bare_in_script_s": round(in_script, 3),
            "ratio": round(ratio, 4),
            "ratio_vs_whole_process": round(ready_s / whole, 4),
            "in_process_first_load_s": round(first_load, 4),
            "in_process_reload_s": round(reload, 4),
            "worker_samples_s": [round(x, 3) for x in worker],
            "bare_samples": bare,
        },
        notes=[
            f"bare whole process (incl. exit) {whole:.2f} s (ratio {ready_s / whole:.2f}); "
            f"bare in-script import+load {in_script:.2f} s; in-process load_model "
            f"{first_load:.2f} s first, {reload:.3f} s again; medians of {cfg.cold_repeats}"
        ],
    )


def _bare(stack: Stack, path: str) -> dict[str, float]:
    spawned = time.time()
    done = subprocess.run(
        [sys.executable, "-c", _BARE.format(path=path)],
        env=stack.env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    exited = time.time()
    if done.returncode != 0:
        raise BenchError(f"bare from_pretrained failed:\n{done.stderr[-3000:]}")
    in_script, loaded_at = (float(x) for x in done.stdout.split()[-2:])
    return {
        "spawn_to_loaded_s": round(loaded_at - spawned, 4),
        "process_s": round(exited - spawned, 4),
        "in_script_s": round(in_script, 4),
    }


def _worker(stack: Stack) -> float:
    child = stack.spawn_worker(torch_threads=1)
    try:
        ready_at = stack.wait_ready(child)
    finally:
        stack.stop_workers()
    return ready_at - child.spawned_at
