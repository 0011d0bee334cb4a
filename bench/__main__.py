"""darkroom's benchmark suite: `python -m bench` (see docs/benchmarks.md).

Starts its own Redis, the API (uvicorn) and Celery workers on tiny-sd, runs
each measurement side by side with its baseline, prints a table (each row:
measured values, target, PASS/MISS) and writes the whole run as JSON to
bench/results/<timestamp>.json. Separate from the tests: nothing here asserts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.api_load import measure_api
from bench.batching import measure_batching
from bench.cold_start import measure_cold_start
from bench.common import ERROR, Result, Settings, cpu_count
from bench.cpuload import ForeignLoad
from bench.fairness import measure_fairness
from bench.latency import measure_latency
from bench.lora import measure_lora
from bench.metrics_cost import measure_metrics
from bench.multiplex import measure_multiplex
from bench.previews import measure_previews
from bench.report import machine, notes, table, write_json
from bench.scale import measure_scale
from bench.soak.run import measure_chaos
from bench.stack import BenchError, Stack
from bench.throughput import measure_queue, measure_scaling

# Average cores taken by other processes above which a row is flagged as disturbed.
BUSY_CORES = 0.2

Measure = Callable[[Stack, Settings], Result]
MEASUREMENTS: dict[str, Measure] = {
    "queue": measure_queue,
    "batching": measure_batching,
    "scaling": measure_scaling,
    "api": measure_api,
    "latency": measure_latency,
    "cold_start": measure_cold_start,
    "metrics": measure_metrics,
    "scale": measure_scale,
}
# Rows too long for every run: measured only when named with --only.
ON_REQUEST: dict[str, Measure] = {
    "chaos": measure_chaos,
    "fairness": measure_fairness,
    "multiplex": measure_multiplex,
    "lora": measure_lora,
    "previews": measure_previews,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    only = _names(args.only)
    cfg = _settings(args)
    started = datetime.now(UTC)
    info = machine()
    print(
        f"darkroom bench {started:%Y-%m-%d %H:%M} UTC: {info['cores']} cores, "
        f"{info['memory_gib']} GiB, no GPU used; jobs={cfg.jobs}, repeats={cfg.repeats}"
        f"{', quick' if cfg.quick else ''}; measuring {', '.join(only)}",
        flush=True,
    )
    results: list[Result] = []
    foreign: dict[str, float | None] = {}
    workdir = Path(tempfile.mkdtemp(prefix="darkroom-bench-"))
    # A chaos soak's logs are its evidence: kept, and its notes say where.
    keep_logs = args.keep_logs or any(name in ON_REQUEST for name in only)
    try:
        with Stack(workdir) as stack:
            for name in only:
                print(f"  {name} ...", end="", flush=True)
                meter = ForeignLoad()
                meter.start()
                t0 = time.monotonic()
                result = _run(name, stack, cfg)
                result.seconds = time.monotonic() - t0
                other = meter.stop()
                foreign[name] = None if other is None else round(other, 3)
                result.details["other_processes_cores"] = foreign[name]
                print(
                    f" {result.status} ({result.seconds:.0f} s"
                    + ("" if other is None else f", other processes used {other:.2f} cores")
                    + ")",
                    flush=True,
                )
                results.append(result)
    except BenchError as exc:
        print(f"\nbench: could not start the stack: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    finally:
        if keep_logs:
            print(f"logs: {workdir / 'logs'}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    warnings = _busy_warnings(foreign)
    print()
    print(table(results, markdown=args.markdown))
    print()
    print(notes(results))
    for warning in warnings:
        print(f"! {warning}")
    path = write_json(
        {
            "started": started.isoformat(),
            "finished": datetime.now(UTC).isoformat(),
            "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
            "settings": vars(cfg),
            "machine": info,
            "load_average_at_end": list(os.getloadavg()),
            "other_processes_cores": foreign,
            "warnings": warnings,
            "results": [r.to_json() for r in results],
        },
        started,
    )
    print(f"\nwritten: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 1 if any(r.status == ERROR for r in results) else 0


def _run(name: str, stack: Stack, cfg: Settings) -> Result:
    try:
        return {**MEASUREMENTS, **ON_REQUEST}[name](stack, cfg)
    except Exception as exc:  # noqa: BLE001 - one broken measurement must not lose the others
        stack.stop_workers()
        with contextlib.suppress(Exception):
            stack.flush()
        return Result(
            name=name.replace("_", " "),
            measured=f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}",
            target="-",
            status=ERROR,
            details={"traceback": traceback.format_exc()},
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--jobs", type=int, default=None, help="jobs per throughput run (64)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: few jobs, one round, short loads"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help=(
            f"run only these (comma or space separated): {', '.join(MEASUREMENTS)}; "
            f"and, only when named, {', '.join(ON_REQUEST)}"
        ),
    )
    parser.add_argument("--repeats", type=int, default=None, help="measured rounds (5)")
    parser.add_argument(
        "--api-seconds", type=float, default=None, help="load duration per endpoint (8)"
    )
    parser.add_argument(
        "--chaos-minutes", type=float, default=None, help="length of the chaos soak (10)"
    )
    parser.add_argument(
        "--chaos-rate", type=float, default=None, help="jobs per second in the chaos soak (3)"
    )
    parser.add_argument(
        "--fairness-minutes",
        type=float,
        default=None,
        help="how long both keys share the workers in the fairness row (10)",
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the processes' logs and say where"
    )
    return parser


def _names(only: list[str] | None) -> list[str]:
    if not only:
        return list(MEASUREMENTS)
    names = [n.strip().replace("-", "_") for part in only for n in part.split(",") if n.strip()]
    known = [*MEASUREMENTS, *ON_REQUEST]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(
            f"python -m bench: unknown benchmark(s) {', '.join(unknown)}; "
            f"choose from {', '.join(known)}"
        )
    return [n for n in known if n in names]


def _settings(args: argparse.Namespace) -> Settings:
    cfg = (
        Settings(
            jobs=16,
            repeats=1,
            warmup_jobs=2,
            api_duration_s=2.0,
            latency_jobs=15,
            cold_repeats=1,
            quick=True,
        )
        if args.quick
        else Settings()
    )
    if args.jobs is not None:
        cfg.jobs = args.jobs
    if args.repeats is not None:
        cfg.repeats = args.repeats
    if args.api_seconds is not None:
        cfg.api_duration_s = args.api_seconds
    if args.chaos_minutes is not None:
        cfg.chaos_minutes = args.chaos_minutes
    if args.chaos_rate is not None:
        cfg.chaos_rate = args.chaos_rate
    if args.fairness_minutes is not None:
        cfg.fairness_minutes = args.fairness_minutes
    return cfg


def _busy_warnings(foreign: dict[str, float | None]) -> list[str]:
    busy = {name: cores for name, cores in foreign.items() if cores and cores > BUSY_CORES}
    if not busy:
        return []
    listed = ", ".join(f"{name} ({cores:.2f} cores)" for name, cores in busy.items())
    return [
        f"other processes used CPU during {listed}: those numbers may be disturbed "
        f"on {cpu_count()} cores; re-run when the machine is idle"
    ]


if __name__ == "__main__":
    raise SystemExit(main())
