"""The `darkroom` command: run the stack or one of its parts, or use a running API."""

from __future__ import annotations

import argparse
import os
import sys

from darkroom.api_commands import add_api_commands
from darkroom.options import add_allow_api_url_option, add_api_options
from shared.version import darkroom_version


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return int(args.run(args) or 0)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="darkroom", description=__doc__)
    parser.add_argument("--version", action="version", version=f"darkroom {darkroom_version()}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run API, worker(s) and Redis locally, show a first image")
    up.add_argument("--port", type=int, default=8000)
    up.add_argument("--workers", type=int, default=1, help="CPU workers to start (default 1)")
    up.add_argument("--model", default=None, help="model the workers serve (default tiny-sd)")
    up.add_argument("--no-demo", action="store_true", help="do not submit the demo job")
    up.add_argument("--once", action="store_true", help="stop after the demo job finished")
    up.add_argument("--ui-port", type=int, default=8501, help="port of the web page (default 8501)")
    up.add_argument("--no-ui", action="store_true", help="do not start the web page")
    add_allow_api_url_option(up)
    up.add_argument(
        "--verbose",
        action="store_true",
        help="stream every process's output here (default: one log file each in .darkroom/logs/)",
    )
    up.set_defaults(run=_up)

    api = commands.add_parser("api", help="run the HTTP API (same as uvicorn api.main:app)")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.set_defaults(run=_api)

    worker = commands.add_parser("worker", help="run one Celery GPU worker")
    worker.add_argument("--model", default=None, help="pin this worker to one registry model")
    worker.add_argument(
        "--models",
        default=None,
        help=(
            "serve these registry models, comma separated, or '*' for all (WORKER_MODELS): "
            "the first loads at start, the others when a job needs them"
        ),
    )
    worker.add_argument(
        "--device-memory",
        default=None,
        help="the models' budget on the device, e.g. 24GiB (WORKER_DEVICE_MEMORY)",
    )
    worker.add_argument(
        "--host-memory",
        default=None,
        help="the warm tier's budget in pinned host memory, e.g. 64GiB (WORKER_HOST_MEMORY)",
    )
    worker.add_argument(
        "--name",
        default=None,
        help="worker name, unique per process (default darkroom-<pid>-<random>@<host>)",
    )
    worker.add_argument("--loglevel", default="INFO")
    pool = worker.add_mutually_exclusive_group()
    pool.add_argument("--gpus", default=None, help="one worker per GPU: 'all' or indices like 0,2")
    pool.add_argument("--workers", type=int, default=None, help="start N CPU workers")
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port (WORKER_METRICS_PORT); a pool: all on one",
    )
    worker.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per worker (default: TORCH_THREADS, or the cores split evenly)",
    )
    worker.set_defaults(run=_worker)

    ui = commands.add_parser("ui", help="serve the web page (Streamlit) for a running API")
    ui.add_argument("--port", type=int, default=8501)
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    add_api_options(ui)
    add_allow_api_url_option(ui)
    ui.set_defaults(run=_ui)

    hooks = commands.add_parser("webhooks", help="run the light webhook delivery worker")
    hooks.add_argument("--concurrency", type=int, default=16)
    hooks.add_argument("--loglevel", default="INFO")
    hooks.add_argument(
        "--metrics-port", type=int, default=None, help="serve Prometheus metrics on this port"
    )
    hooks.set_defaults(run=_webhooks)

    add_api_commands(commands)

    models = commands.add_parser("models", help="show the effective model registry")
    models.add_argument("--json", action="store_true")
    models.set_defaults(run=_models)
    return parser


def _up(args: argparse.Namespace) -> int:
    from darkroom.stack import LocalStack

    return LocalStack(
        port=args.port,
        workers=args.workers,
        model=args.model,
        demo=not args.no_demo,
        ui_port=None if args.no_ui else args.ui_port,
        allowed_api_urls=args.allow_api_url,
        verbose=args.verbose,
    ).run(once=args.once)


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run("api.main:app", host=args.host, port=args.port)
    return 0


def _worker(args: argparse.Namespace) -> int:
    if args.model:
        # Read by the worker's settings (WORKER_MODEL), before the app is imported.
        os.environ["WORKER_MODEL"] = args.model
    for value, variable in (
        (args.models, "WORKER_MODELS"),
        (args.device_memory, "WORKER_DEVICE_MEMORY"),
        (args.host_memory, "WORKER_HOST_MEMORY"),
    ):
        if value:
            os.environ[variable] = value
    if args.metrics_port is not None:
        os.environ["WORKER_METRICS_PORT"] = str(args.metrics_port)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("darkroom worker --threads: expected a number of threads >= 1")
        os.environ["TORCH_THREADS"] = str(args.threads)
    if args.gpus or (args.workers and args.workers > 1):
        from darkroom.pool import resolve_gpus, run_pool

        gpus: list[str | None] = (
            list(resolve_gpus(args.gpus)) if args.gpus else [None] * args.workers
        )
        return run_pool(gpus, args.name, args.loglevel)
    from darkroom import process_commands
    from shared.workers import unique_name

    # The same command line the pool and `darkroom up` start, in this process
    # (same pid); the celery command exits with the worker's own exit code.
    argv = process_commands.celery_worker(
        args.name or unique_name(), args.loglevel, standalone=False
    )
    os.execv(argv[0], argv)
    return 1  # not reached


def _ui(args: argparse.Namespace) -> int:
    from darkroom.process_commands import streamlit_ui, streamlit_ui_env

    # The page reads the API's address and key from its environment (not argv,
    # which `ps` shows to every user of the machine).
    env = {**os.environ, **streamlit_ui_env(args.api_url, args.api_key, args.allow_api_url)}
    argv = streamlit_ui(args.port, args.host)
    print(f"darkroom ui: http://{args.host}:{args.port} (API {args.api_url})", flush=True)
    os.execve(argv[0], argv, env)
    return 1  # not reached


def _webhooks(args: argparse.Namespace) -> int:
    if args.metrics_port is not None:
        os.environ["WORKER_METRICS_PORT"] = str(args.metrics_port)
    from shared.constants import WEBHOOK_QUEUE
    from worker.webhook_app import app

    app.worker_main(
        [
            "worker",
            f"--loglevel={args.loglevel}",
            f"--concurrency={args.concurrency}",
            f"--queues={WEBHOOK_QUEUE}",
            "--hostname=webhooks-%i@%h",
        ]
    )
    return 0


def _models(args: argparse.Namespace) -> int:
    from shared.registry import get_registry

    registry = get_registry()
    if args.json:
        print(registry.model_dump_json(indent=2))
        return 0
    runtime = registry.runtime
    print(f"registry: {os.environ.get('MODEL_CONFIG', 'model_config.yaml')}")
    print(f"primary:  {runtime.primary_model}")
    print(f"fallback: {', '.join(registry.fallback_chain) or '(off)'}")
    for name, entry in registry.models.items():
        p = entry.params
        print(
            f"  {name:14} {entry.type:5} steps {p.default_steps}/{p.max_steps} "
            f"size {p.default_size[0]}x{p.default_size[1]} (max {p.max_size[0]}x{p.max_size[1]}) "
            f"i2i={'yes' if p.supports_i2i else 'no'}  {entry.id}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
