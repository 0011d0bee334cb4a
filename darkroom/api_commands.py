"""The commands that talk to a running API: submit, jobs, get, cancel, status.

Each prints for people by default (rich tables, one summary line) and the API's
own JSON with `--json`. Each exits non-zero with one clear line on stderr when
the API refuses the call or cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from darkroom.client import PRIORITIES, TERMINAL, ApiError, DarkroomClient, allowed_priorities
from darkroom.options import add_api_options
from darkroom.progress import watch
from darkroom.saving import save_images
from darkroom.submit import build_body
from darkroom.tables import job_table, jobs_table, status_tables, summary_line

# Exit codes: 1 the API refused or the job failed; 130 stopped by Ctrl-C (the shell's
# convention for SIGINT).
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace, DarkroomClient, Console], int]


def add_api_commands(commands: Any) -> None:
    """Add the client subcommands to `darkroom`'s subparsers."""
    submit = _command(commands, "submit", "submit a job (--wait shows its progress)", _submit)
    submit.add_argument("prompt")
    submit.add_argument("--negative-prompt", default=None)
    submit.add_argument("--model", default=None, help="registry name (default: the primary)")
    submit.add_argument("--seed", type=int, default=None)
    submit.add_argument("--steps", type=int, default=None)
    submit.add_argument("--width", type=int, default=None)
    submit.add_argument("--height", type=int, default=None)
    submit.add_argument("--guidance-scale", type=float, default=None)
    submit.add_argument("-n", "--num-images", type=int, default=None)
    submit.add_argument(
        "--priority",
        choices=PRIORITIES,
        default=None,
        help="one your API key may use (darkroom checks before submitting)",
    )
    submit.add_argument("--init-image", type=Path, default=None, help="image file: img2img")
    submit.add_argument("--strength", type=float, default=None)
    submit.add_argument(
        "--lora",
        action="append",
        default=None,
        metavar="NAME[:SCALE]",
        help="a LoRA adapter by name (GET /loras), at its scale; repeat for several",
    )
    submit.add_argument("--wait", action="store_true", help="wait, showing progress, until done")
    submit.add_argument(
        "-o", "--output", type=Path, default=None, help="save the images (waits): a file or dir"
    )
    submit.add_argument(
        "--previews",
        type=Path,
        default=None,
        metavar="DIR",
        help="save its live previews into DIR as they come (waits)",
    )

    jobs = _command(commands, "jobs", "your recent jobs, newest first", _jobs)
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "canceled"])

    get = _command(commands, "get", "one job; -o saves its images", _get)
    get.add_argument("job_id")
    get.add_argument("-o", "--output", type=Path, default=None, help="a file or a directory")

    cancel = _command(commands, "cancel", "cancel a queued or running job", _cancel)
    cancel.add_argument("job_id")

    _command(commands, "status", "workers, models, queue depths and problems", _status)


def _command(commands: Any, name: str, help_text: str, handler: Handler) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
    add_api_options(parser)
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    parser.set_defaults(run=lambda args: _run(handler, args))
    return parser


def _run(handler: Handler, args: argparse.Namespace) -> int:
    console = Console(highlight=False, soft_wrap=True)
    try:
        with DarkroomClient(args.api_url, api_key=args.api_key) as client:
            return handler(args, client, console)
    except ApiError as exc:
        print(f"darkroom: {_explain(exc)}", file=sys.stderr)
        return EXIT_FAILED


def _explain(exc: ApiError) -> str:
    if exc.status_code == 401:
        return f"{exc} (pass --api-key or set DARKROOM_API_KEY)"
    if exc.retry_after_s is not None:
        return f"{exc} (retry in {exc.retry_after_s:.0f} s)"
    return str(exc)


def _submit(args: argparse.Namespace, client: DarkroomClient, console: Console) -> int:
    refusal = _priority_refusal(client, args.priority)
    if refusal is not None:
        print(f"darkroom: {refusal}", file=sys.stderr)
        return EXIT_FAILED
    job = client.submit(build_body(args))
    if args.wait or args.output or args.previews:
        try:
            job = watch(client, job, Console(stderr=True, highlight=False), previews=args.previews)
        except KeyboardInterrupt:
            print(
                f"\ndarkroom: stopped waiting; job {job['id']} keeps running "
                f"(darkroom get {job['id']})",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
    return _show_job(args, client, console, job)


def _priority_refusal(client: DarkroomClient, priority: str | None) -> str | None:
    """Why the key may not use `priority` (None: it may), asked before anything is queued."""
    if priority is None:
        return None
    allowed = allowed_priorities(client)
    if priority in allowed:
        return None
    return f"priority {priority!r} is not allowed for this API key (allowed: {', '.join(allowed)})"


def _get(args: argparse.Namespace, client: DarkroomClient, console: Console) -> int:
    job = client.get(args.job_id)
    if not args.json:
        console.print(job_table(job))
    return _show_job(args, client, console, job)


def _show_job(
    args: argparse.Namespace, client: DarkroomClient, console: Console, job: dict[str, Any]
) -> int:
    saved = save_images(client, job, args.output) if args.output and job["images"] else []
    if args.json:
        print(json.dumps(job, indent=2))
    else:
        console.print(summary_line(job, saved))
    if args.output and job["status"] in TERMINAL and not job["images"]:
        print(f"darkroom: job {job['id']} is {job['status']}: no images to save", file=sys.stderr)
    return EXIT_FAILED if job["status"] in {"failed", "canceled"} else 0


def _jobs(args: argparse.Namespace, client: DarkroomClient, console: Console) -> int:
    jobs = client.list_jobs(limit=args.limit, status=args.status)
    if args.json:
        print(json.dumps(jobs, indent=2))
    elif jobs:
        console.print(jobs_table(jobs))
    else:
        console.print("no jobs yet")
    return 0


def _cancel(args: argparse.Namespace, client: DarkroomClient, console: Console) -> int:
    job = client.cancel(args.job_id)
    if args.json:
        print(json.dumps(job, indent=2))
    elif job["status"] == "canceled":
        console.print(f"canceled {job['id']}")
    else:
        console.print(f"cancel requested: {job['id']} stops at its next step")
    return 0


def _status(args: argparse.Namespace, client: DarkroomClient, console: Console) -> int:
    status = client.status()
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    for part in status_tables(status):
        console.print(part)
    # Degraded (no worker) is an answer, not a failure of this command; down is.
    return EXIT_FAILED if status["status"] == "down" else 0
