"""What became of a chaos soak's jobs: the row's figures, notes and JSON details.

Lost (accepted, then missing or not terminal once the drain ends) must be 0;
failed should be 0. Jobs run more than once are explained from the reaper's
log lines; refusals are placed against the event that most likely caused them.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import Result, median, percentile, verdict
from bench.jobs import TERMINAL, ts
from bench.soak.events import Event, chaos_events
from bench.soak.logs import log_problems, mentions, reaper_lines
from bench.soak.notes import notes
from bench.soak.stream import Refusal

# A refusal this long after an event's end is no longer blamed on it.
GRACE_S = 10.0
DISRUPTIVE = ("api-", "failover-")
SAMPLES = 3


@dataclass
class Soak:
    """Everything one chaos run observed."""

    minutes: float
    rate: float
    seed: int
    origin: float  # time.time() at the start
    stopped: float  # when the stream and the chaos stopped
    drain_s: float
    sent: int
    accepted: dict[str, float]  # job id -> time.time() its POST was sent
    refusals: list[Refusal]
    records: dict[str, dict[str, Any] | None]  # the last record seen (None: 404)
    events: list[Event]
    killed: set[str]  # workers SIGKILLed by the chaos
    exited: list[dict[str, Any]]  # workers that exited by themselves
    workers_at_end: list[dict[str, Any]]
    # For each job not terminal at the end: where the broker still holds its message.
    broker: dict[str, list[str]]
    logs_dir: Path


def chaos_result(soak: Soak) -> Result:
    records = [r for r in soak.records.values() if r is not None]
    statuses = Counter(r["status"] for r in records)
    lost = _lost(soak)
    failed = [r for r in records if r["status"] == "failed"]
    reruns = _reruns(records, soak)
    latencies = [
        ts(r["finished_at"]) - ts(r["created_at"]) for r in records if r["status"] == "succeeded"
    ]
    p50 = median(latencies) if latencies else float("nan")
    p99 = percentile(latencies, 99) if latencies else float("nan")
    refusals = _refusals(soak)
    details: dict[str, Any] = {
        "minutes": soak.minutes,
        "rate_per_s": soak.rate,
        "seed": soak.seed,
        "logs": str(soak.logs_dir),
        "sent": soak.sent,
        "accepted": len(soak.accepted),
        "statuses": dict(statuses),
        "lost": lost,
        "failed": [_failure(r) for r in failed],
        "reruns": reruns,
        "refusals": refusals,
        "submit_to_done_p50_s": round(p50, 3),
        "submit_to_done_p99_s": round(p99, 3),
        "drain_s": round(soak.drain_s, 1),
        "workers": _workers(records, soak),
        "log_problems": log_problems(soak.logs_dir),
        "events": [e.to_json(soak.origin) for e in soak.events],
    }
    return Result(
        name="chaos",
        measured=(
            f"{len(soak.accepted)} accepted: {statuses['succeeded']} succeeded, "
            f"{len(failed)} failed, {statuses['canceled']} canceled, {len(lost)} lost; "
            f"{len(reruns['jobs'])} run twice+; {len(soak.refusals)} refused; "
            f"submit->done p50 {p50:.2f} s, p99 {p99:.2f} s"
        ),
        target="lost = 0",
        status=verdict(not lost and not failed),
        details=details,
        notes=notes(details, soak.events, soak.origin),
    )


def _lost(soak: Soak) -> list[dict[str, Any]]:
    """Accepted jobs missing (404) or not terminal at the end of the drain, each with
    the event it was submitted near and the log lines that name it."""
    lost: list[dict[str, Any]] = []
    for job_id, sent in soak.accepted.items():
        record = soak.records.get(job_id)
        if record is not None and record["status"] in TERMINAL:
            continue
        lost.append(
            {
                "id": job_id,
                "sent_t": round(sent - soak.origin, 2),
                "near": _nearby(sent, _chaos_events(soak)),
                "broker_message": soak.broker.get(job_id),
                "status": "404" if record is None else record["status"],
                "worker": None if record is None else record.get("worker"),
                "attempts": None if record is None else record.get("attempts"),
            }
        )
    found = mentions(soak.logs_dir, [job["id"] for job in lost])
    return [{**job, "logs": found[job["id"]]} for job in lost]


def _nearby(at: float, events: list[Event], before_s: float = 2.0) -> list[str]:
    """Events under way around `at` (from `before_s` ahead of it to GRACE_S after
    their end), as "label +offset s", the latest first."""
    near = [e for e in events if e.at - before_s <= at <= e.ended + GRACE_S]
    return [f"{e.label} {at - e.at:+.2f} s" for e in reversed(near)]


def _failure(record: dict[str, Any]) -> dict[str, Any]:
    error = record.get("error") or {}
    return {"id": record["id"], "type": error.get("type"), "message": error.get("message")}


# -- jobs run more than once ---------------------------------------------------------


def _reruns(records: list[dict[str, Any]], soak: Soak) -> dict[str, Any]:
    """Jobs with attempts > 1, each with why: the reaper took it from a worker the chaos
    SIGKILLed, from a worker that was alive (its record had expired), or no reaper
    line names it."""
    lines = reaper_lines(soak.logs_dir)
    jobs = []
    for record in records:
        if record.get("attempts", 0) <= 1:
            continue
        reaped = lines.get(record["id"], [])
        lost_workers = sorted({line["worker"] for line in reaped})
        if not reaped:
            why = "no reaper line"
        elif all(w in soak.killed for w in lost_workers):
            why = "reaped: its worker was SIGKILLed"
        else:
            why = "reaped from a worker the chaos did not kill"
        jobs.append(
            {
                "id": record["id"],
                "attempts": record["attempts"],
                "status": record["status"],
                "why": why,
                "lost_workers": lost_workers,
                "reaped_by": sorted({line["log"] for line in reaped}),
            }
        )
    by_log = Counter(line["log"] for found in lines.values() for line in found)
    return {
        "jobs": jobs,
        "by_reason": dict(Counter(job["why"] for job in jobs)),
        "reaper_lines_by_log": dict(by_log),
    }


# -- refusals ------------------------------------------------------------------------


def _chaos_events(soak: Soak) -> list[Event]:
    return chaos_events(soak.events)


def _cause(at: float, waited_s: float, events: list[Event]) -> Event | None:
    """For a request sent at `at` and answered `waited_s` later: the latest API restart
    or failover whose span (plus GRACE_S) holds it, else the latest event of any
    kind within GRACE_S of it."""
    started = [e for e in events if e.at <= at + waited_s]
    for pool in ([e for e in started if e.kind.startswith(DISRUPTIVE)], started):
        near = [e for e in pool if at <= e.ended + GRACE_S]
        if near:
            return near[-1]
    return None


def _refusals(soak: Soak) -> dict[str, Any]:
    chaos = _chaos_events(soak)
    by_status = Counter(r.status for r in soak.refusals)
    samples: dict[str, list[str]] = defaultdict(list)
    by_event: dict[str, dict[str, Any]] = {}
    for refusal in soak.refusals:
        if (
            refusal.message not in samples[refusal.status]
            and len(samples[refusal.status]) < SAMPLES
        ):
            samples[refusal.status].append(refusal.message[:300])
        cause = _cause(refusal.at, refusal.waited_s, chaos)
        label = cause.label if cause else "none (no event near it)"
        offset = refusal.at - cause.at if cause else refusal.at - soak.origin
        entry = by_event.setdefault(label, {"statuses": Counter(), "offsets_s": []})
        entry["statuses"][refusal.status] += 1
        entry["offsets_s"].append(round(offset, 2))
    return {
        "by_status": dict(by_status),
        "samples": dict(samples),
        "by_event": {
            label: {
                "statuses": dict(entry["statuses"]),
                "from_s": min(entry["offsets_s"]),
                "to_s": max(entry["offsets_s"]),
            }
            for label, entry in by_event.items()
        },
        "server_errors": [
            {"t": round(r.at - soak.origin, 2), "status": r.status, "message": r.message}
            for r in soak.refusals
            if r.status.isdigit() and int(r.status) >= 500 and r.status != "503"
        ],
    }


# -- workers and logs ------------------------------------------------------------------


def _workers(records: list[dict[str, Any]], soak: Soak) -> dict[str, Any]:
    """Who ran the jobs, and whether each last worker took jobs after the last failover
    (a worker that never reconnected would take none)."""
    failovers = [e for e in soak.events if e.kind.startswith("failover-") and not e.error]
    last = failovers[-1].ended if failovers else soak.origin
    finished_after = Counter(
        r.get("worker")
        for r in records
        if r["status"] == "succeeded" and r.get("finished_at") and ts(r["finished_at"]) > last
    )
    return {
        "jobs_by_worker": dict(Counter(r.get("worker") for r in records)),
        "last_failover_t": round(last - soak.origin, 1),
        "at_end": [
            {
                **w,
                "spawned_t": round(w["spawned_at"] - soak.origin, 1),
                "jobs_after_last_failover": finished_after.get(w["worker"], 0),
                # Up before the last failover and idle since: it never found the new master.
                "stuck": w["spawned_at"] < last and not finished_after.get(w["worker"]),
            }
            for w in soak.workers_at_end
        ],
        "exited_by_themselves": soak.exited,
    }
