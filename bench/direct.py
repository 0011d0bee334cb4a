"""The baseline: the worker's own pipeline code in a plain loop, in one process.

Run as a child of the benchmark (`python -m bench.direct --threads T`) so it
gets a fresh interpreter and the same torch thread setting as the worker it is
compared with. It loads the model once, prints a JSON line, then answers each
`run N` line on stdin with a JSON line of timings, until `quit`.

Each job is exactly what a worker does between claiming and storing a job:
worker.inference.generate with the job's resolved parameters, then encode_png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.direct")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--model", default="tiny-sd")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from api.params import resolve_params
    from shared.jobs import JobCreate
    from shared.registry import load_registry
    from worker.inference import encode_png, generate
    from worker.loader import load_model

    registry = load_registry(REPO_ROOT / "model_config.yaml")
    entry = registry.entry(args.model)
    memory = registry.runtime.memory

    # The first load pays for importing the pipeline classes; the second is
    # what loading costs in a process that is already warm.
    loads = []
    for _ in range(2):
        start = time.perf_counter()
        model = load_model(args.model, entry, memory, device="cpu")
        loads.append(time.perf_counter() - start)

    def run(bodies: list[dict[str, Any]]) -> float:
        start = time.perf_counter()
        for body in bodies:
            params = resolve_params(JobCreate(**body), entry, None)
            images = generate(model, params)
            for image in images:
                encode_png(image)
        return time.perf_counter() - start

    from bench.jobs import job_bodies

    run(job_bodies(args.warmup, offset=100_000))
    _emit({"ready": True, "load_s": loads, "threads": torch.get_num_threads()})
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        if command[0] == "run":
            count = int(command[1])
            _emit({"jobs": count, "seconds": run(job_bodies(count))})
    return 0


def _emit(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
