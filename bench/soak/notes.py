"""The chaos row's notes: its figures in words, the findings first, then the timeline."""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.soak.events import Event, chaos_events


def notes(details: dict[str, Any], events: list[Event], origin: float) -> list[str]:
    """The row's notes from its details (bench.soak.report) and the events."""
    chaos = chaos_events(events)
    kinds = Counter(e.kind for e in chaos)
    notes = [
        f"logs of every process, the Redis cluster (chaos-redis/) and the event log "
        f"(chaos-events.log): {details['logs']}",
        f"{details['minutes']:g} min at {details['rate_per_s']:g} jobs/s "
        f"(seed {details['seed']}): {details['sent']} sent; events: "
        + ", ".join(f"{kind} x{n}" for kind, n in sorted(kinds.items()))
        + f"; drained {details['drain_s']:.0f} s after the stream stopped",
    ]
    notes += [f"EVENT FAILED {e.label}: {e.error}" for e in chaos if e.error]
    notes += _refusal_notes(details["refusals"])
    notes += _job_notes(details)
    notes += _worker_notes(details["workers"])
    notes += _problem_notes(details["log_problems"])
    notes.append("timeline:\n" + "\n".join("    " + e.line(origin) for e in events))
    return notes


def _refusal_notes(refusals: dict[str, Any]) -> list[str]:
    if not refusals["by_status"]:
        return ["refusals: none"]
    notes = [
        "refusals: "
        + ", ".join(f"{status} x{n}" for status, n in refusals["by_status"].items())
        + "; by the event before them: "
        + "; ".join(
            f"{label} {_counts(entry['statuses'])} at +{entry['from_s']}..+{entry['to_s']} s"
            for label, entry in refusals["by_event"].items()
        )
    ]
    for status, messages in refusals["samples"].items():
        notes.append(f"refusal {status}, e.g.: " + " | ".join(messages))
    if refusals["server_errors"]:
        notes.append(f"DARKROOM BUG? 5xx other than 503: {refusals['server_errors'][:5]}")
    return notes


def _job_notes(details: dict[str, Any]) -> list[str]:
    notes = []
    for job in details["lost"][:10]:
        broker = job["broker_message"]
        notes.append(
            f"LOST {job['id']}: sent t+{job['sent_t']}s "
            f"(near {', '.join(job['near']) or 'no event'}), now {job['status']}"
            + ("" if broker is None else f", its broker message: {', '.join(broker) or 'none'}")
            + "; its log lines:\n"
            + "\n".join(f"    {line}" for line in job["logs"])
        )
    if details["failed"]:
        kinds = Counter(f"{f['type']}: {f['message']}" for f in details["failed"])
        notes.append(f"failed: {_counts(kinds)}")
    reruns = details["reruns"]
    notes.append(
        f"run more than once: {len(reruns['jobs'])} ({_counts(reruns['by_reason']) or '-'}); "
        f"reaper lines by log: {_counts(reruns['reaper_lines_by_log']) or '-'}"
    )
    odd = [j for j in reruns["jobs"] if j["why"] != "reaped: its worker was SIGKILLed"]
    if odd:
        notes.append(f"re-runs not explained by a kill: {odd[:10]}")
    return notes


def _worker_notes(workers: dict[str, Any]) -> list[str]:
    at_end = ", ".join(
        f"{w['worker']} (started t+{w['spawned_t']:.0f}s, {w['state']}, "
        f"{w['jobs_after_last_failover']} jobs)"
        for w in workers["at_end"]
    )
    notes = [
        f"workers at the end, jobs each finished after the last failover "
        f"(t+{workers['last_failover_t']:.0f}s): {at_end}"
    ]
    stuck = [w["worker"] for w in workers["at_end"] if w["stuck"]]
    if stuck:
        notes.append(f"WORKERS IDLE SINCE THE LAST FAILOVER (not reconnected?): {stuck}")
    if workers["exited_by_themselves"]:
        notes.append(f"WORKERS EXITED BY THEMSELVES: {workers['exited_by_themselves']}")
    return notes


def _problem_notes(problems: dict[str, dict[str, int]]) -> list[str]:
    """ERROR/CRITICAL lines, the API's logs and the workers' summed apart."""
    kinds: dict[str, Counter[str]] = {"API": Counter(), "workers": Counter()}
    for log, shapes in problems.items():
        kinds["API" if log.startswith("chaos-api") else "workers"].update(shapes)
    return [
        f"{kind} logs, ERROR/CRITICAL lines by shape: "
        + "; ".join(f"{shape!r} x{n}" for shape, n in shapes.most_common(5))
        for kind, shapes in kinds.items()
        if shapes
    ]


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} x{n}" for key, n in counts.items())
