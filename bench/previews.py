"""Row: live previews (`--only previews`; docs/api.md, "Live previews").

One worker on tiny-sd runs rounds of jobs (128x128, 20 steps: about half a
second each on one CPU thread, so a job gets one preview or two at the default
PREVIEW_INTERVAL_S) while a watcher marks every job watched, as clients with an
open stream would: the same jobs with previews on against PREVIEWS=off, each
way first in every other round. Target: throughput with previews >= 0.97x.

The watcher also polls the running job's preview every few milliseconds: the
time from a job's start (its `started_at`) to its first preview, for a job
watched from before it started.

Previews are made two ways: the linear projection every real model uses by
default (the registry's `preview_decoder` unset) and the tiny model's own VAE
(`preview_decoder: vae`, a full decode per preview), reported beside it.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import redis
import yaml

from bench.common import Result, Settings, median, percentile, run_python, verdict
from bench.jobs import BatchRun, job_bodies, run_batch_checked, ts
from bench.stack import MODEL, REPO_ROOT, Stack
from shared.constants import JOB_KEY_PREFIX, JOBS_INDEX_KEY, RUNNING_KEY
from shared.previews import WATCH_WINDOW_S, preview_key, watch_key
from shared.redis_replies import reply_text

SIZE, STEPS = 128, 20
TARGET = 0.97
# The watcher: marks every job watched this often, looks for first previews this often.
MARK_EVERY_S = 1.0
LOOK_EVERY_S = 0.005


# In a process of its own: the engine's side alone, the same calls with a preview
# hook that always wants previews (at the default interval) and without one.
_ENGINE_CODE = """
import json, statistics, sys, time
from pathlib import Path
import torch
from shared.jobs import GenerationParams
from shared.registry import load_registry
from worker import inference
from worker.loader import load_model
from worker.call_types import Request
from worker.previews import CallPreviews, PreviewEncoder, preview_decoder

torch.set_num_threads(1)
registry, size, steps, calls = load_registry(Path(sys.argv[1])), *map(int, sys.argv[2:5])
entry = registry.models["tiny-sd"]
model = load_model("tiny-sd", entry, registry.runtime.memory, "cpu")
encoder, made = PreviewEncoder(), []
params = GenerationParams(prompt="a lighthouse", negative_prompt="blurry", width=size,
                          height=size, steps=steps, seed=1, guidance_scale=7.5, num_images=1)

def call(watched):
    hook = None
    if watched:
        hook = CallPreviews(preview_decoder(model), [1], (size, size), 0.5, lambda: 1,
                            lambda *told: made.append(told[-1]), encoder)
    start = time.perf_counter()
    inference.generate_batch(model, [Request(params)], lambda done, total: None, hook)
    return time.perf_counter() - start

call(False); call(True)
off, on = [], []
for i in range(calls):
    for watched in ((False, True) if i % 2 == 0 else (True, False)):
        (on if watched else off).append(call(watched))
print(json.dumps({"off_s": statistics.median(off), "on_s": statistics.median(on),
                  "preview_ms": 1000 * statistics.median(made)}))
"""


def measure_previews(stack: Stack, cfg: Settings) -> Result:
    engine = _engine(_registry(stack, None), calls=max(10, cfg.jobs // 2))
    linear = _rounds(stack, cfg, _registry(stack, None))
    vae = _rounds(stack, cfg, _registry(stack, "vae"), repeats=max(1, cfg.repeats // 2))
    ratio = linear["ratio"]
    first = linear["first_preview_s"]
    return Result(
        name="previews",
        measured=(
            f"watched with previews {ratio:.3f}x the jobs/s of PREVIEWS=off "
            f"({linear['on_jobs_per_s']:.2f} vs {linear['off_jobs_per_s']:.2f}); "
            f"first preview {percentile(first, 50) * 1000:.0f} ms after the job's start "
            f"(p90 {percentile(first, 90) * 1000:.0f} ms); full VAE decode instead: "
            f"{vae['ratio']:.3f}x; the engine alone {engine['ratio']:.3f}x "
            f"({engine['preview_ms']:.1f} ms a preview)"
        ),
        target=f">= {TARGET}x with previews (linear projection, the default)",
        status=verdict(ratio >= TARGET),
        details={"linear": linear, "vae": vae, "engine": engine},
        notes=[
            f"{MODEL}, {SIZE}x{SIZE}, {STEPS} steps, one worker, one torch thread; "
            f"{cfg.jobs} jobs a round, {cfg.repeats} rounds each way; every job marked "
            f"watched from its submission (as an open event stream does); "
            f"{linear['previews_per_job']:.1f} previews a job; first preview: from "
            "`started_at` to when a 5 ms poll of Redis found it",
            f"the engine alone: the same pipeline call in one process, {engine['calls']} "
            f"times each way, with a preview hook always watching and without: "
            f"{engine['on_s'] * 1000:.0f} vs {engine['off_s'] * 1000:.0f} ms a call; "
            "what the stack adds on top (watch checks, storing previews) is in the first ratio",
        ],
    )


def _engine(registry: str, calls: int) -> dict[str, Any]:
    stdout = run_python("previews", _ENGINE_CODE, registry, str(SIZE), str(STEPS), str(calls))
    answer = json.loads(stdout.strip().splitlines()[-1])
    return {**answer, "ratio": answer["off_s"] / answer["on_s"], "calls": calls}


def _registry(stack: Stack, decoder: str | None) -> str:
    raw = yaml.safe_load((REPO_ROOT / "model_config.yaml").read_text())
    entry = raw["models"][MODEL]
    entry["id"] = str(stack.model_path)
    entry.pop("preview_decoder", None)
    if decoder is not None:
        entry["preview_decoder"] = decoder
    entry["params"]["max_size"] = [SIZE, SIZE]
    path = stack.workdir / f"model_config.previews-{decoder or 'linear'}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _rounds(
    stack: Stack, cfg: Settings, registry: str, repeats: int | None = None
) -> dict[str, Any]:
    on: list[BatchRun] = []
    off: list[BatchRun] = []
    watcher = _Watcher(stack)
    first_preview: list[float] = []
    made = 0
    base = {"MODEL_CONFIG": registry}
    try:
        watcher.start()
        for r in range(repeats or cfg.repeats):
            order = [(on, "on"), (off, "off")] if r % 2 == 0 else [(off, "off"), (on, "on")]
            for runs, previews in order:
                env = {**base, "PREVIEWS": previews}
                api_url, api = stack.start_uvicorn(
                    f"api-previews-{previews}", "api.main:app", extra_env=env
                )
                stack.start_workers(1, torch_threads=cfg.queue_threads, extra_env=env)
                try:
                    bodies = job_bodies(cfg.jobs, offset=(r + 1) * 10_000, size=SIZE, steps=STEPS)
                    run_batch_checked(api_url, bodies[:2])  # warm-up
                    watcher.reset()
                    runs.append(run_batch_checked(api_url, bodies[2:]))
                    if previews == "on":
                        first_preview += watcher.first_preview_s()
                        made += watcher.previews
                finally:
                    stack.stop_workers()
                    stack.stop_child(api)
                    stack.flush()
    finally:
        watcher.stop()
    on_rate = median([r.jobs_per_s for r in on])
    off_rate = median([r.jobs_per_s for r in off])
    return {
        "on_jobs_per_s": on_rate,
        "off_jobs_per_s": off_rate,
        "ratio": on_rate / off_rate,
        "first_preview_s": first_preview,
        "previews_per_job": made / max(1, sum(r.jobs for r in on)),
        "rounds": {"on": [r.summary() for r in on], "off": [r.summary() for r in off]},
    }


class _Watcher:
    """Marks every job in the index watched, and notes when each first had a preview."""

    def __init__(self, stack: Stack):
        self.client: redis.Redis = stack.redis()
        self.seen: dict[str, float] = {}
        self.previews = 0
        self._last_seq: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def reset(self) -> None:
        self.seen = {}
        self.previews = 0

    def first_preview_s(self) -> list[float]:
        """Per job with a preview: seconds from its start to its first preview."""
        out = []
        for job_id, at in list(self.seen.items()):
            started = self.client.hget(JOB_KEY_PREFIX + job_id, "started_at")
            if started:
                out.append(at - ts(reply_text(started).strip('"')))
        return out

    def _run(self) -> None:
        marked = 0.0
        while not self._stop.is_set():
            ids = [reply_text(i) for i in self.client.zrange(JOBS_INDEX_KEY, -200, -1)]
            if time.monotonic() - marked >= MARK_EVERY_S:
                pipe = self.client.pipeline(transaction=False)
                for job_id in ids:
                    pipe.set(watch_key(job_id), b"1", px=int(WATCH_WINDOW_S * 1000))
                pipe.execute()
                marked = time.monotonic()
            # The running jobs (for the count) and those not seen with a preview yet.
            running = [reply_text(i) for i in self.client.hkeys(RUNNING_KEY)]
            looked = list(dict.fromkeys(running + [i for i in ids if i not in self.seen]))
            pipe = self.client.pipeline(transaction=False)
            for job_id in looked:
                pipe.hget(preview_key(job_id), "seq")
            now = time.time()
            for job_id, seq in zip(looked, pipe.execute(), strict=True):
                if seq is None:
                    continue
                self.seen.setdefault(job_id, now)
                if int(seq) != self._last_seq.get(job_id):
                    self._last_seq[job_id] = int(seq)
                    self.previews += 1
            time.sleep(LOOK_EVERY_S)
