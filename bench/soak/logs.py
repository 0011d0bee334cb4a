"""Reading a chaos soak's logs: the reaper's hand-backs, errors, and what each log says
about a given job."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

# The reaper's lines (shared/reaper.py), in worker and API logs alike.
REQUEUED = re.compile(r"job (\S+) lost its worker (\S+) \(attempt \d+\): re-queuing it")
GAVE_UP = re.compile(r"job (\S+) lost its worker (\S+) on attempt \d+ of \d+: failing it")
# Darkroom's "<time> LEVEL logger: message" and Celery's "[<time>: LEVEL/Process] message".
PROBLEM = re.compile(r"\b(ERROR|CRITICAL)\b[/ :]\s*(?:\S+:\s)?(.*)")
# The API's and the workers' logs (chaos-api-N.log, chaosN_bench.log).
DARKROOM_LOGS = "chaos*.log"


def _lines(logs_dir: Path) -> list[tuple[str, str]]:
    """(log name, line) of every darkroom log of the soak, log by log."""
    return [
        (path.name, line)
        for path in sorted(logs_dir.glob(DARKROOM_LOGS))
        if path.name != "chaos-events.log"
        for line in path.read_text(errors="replace").splitlines()
    ]


def reaper_lines(logs_dir: Path) -> dict[str, list[dict[str, str]]]:
    """Per job id, each reaper line about it: the lost worker, the log, the action."""
    found: dict[str, list[dict[str, str]]] = defaultdict(list)
    for log, line in _lines(logs_dir):
        for action, pattern in (("requeued", REQUEUED), ("failed", GAVE_UP)):
            match = pattern.search(line)
            if match:
                found[match[1]].append({"worker": match[2], "log": log, "action": action})
    return found


def log_problems(logs_dir: Path) -> dict[str, dict[str, int]]:
    """Per log, its ERROR/CRITICAL lines and tracebacks, counted by message shape
    (numbers and ids blanked)."""
    problems: dict[str, Counter[str]] = defaultdict(Counter)
    for log, line in _lines(logs_dir):
        if line.startswith("Traceback"):
            problems[log]["Traceback"] += 1
        elif match := PROBLEM.search(line):
            problems[log][re.sub(r"[0-9a-f]{8,}|\d+", "#", match[2])[:140]] += 1
    return {log: dict(shapes.most_common()) for log, shapes in problems.items()}


def mentions(logs_dir: Path, ids: list[str], limit: int = 8) -> dict[str, list[str]]:
    """Per job id, the first `limit` log lines naming it, as "log: line"."""
    wanted = set(ids)
    found: dict[str, list[str]] = {job_id: [] for job_id in ids}
    pattern = re.compile(r"[0-9a-f]{32}")
    for log, line in _lines(logs_dir):
        for job_id in set(pattern.findall(line)) & wanted:
            if len(found[job_id]) < limit:
                found[job_id].append(f"{log}: {line[:300]}")
    return found
