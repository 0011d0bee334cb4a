"""The whole cluster's state in one Redis round trip, for the API's /metrics.

One Lua script reads the live workers, the running-job index, the waiting set
of every queue counted per priority band, and the webhook backlog. A scrape
then costs one call however many workers and queued jobs there are, and every
API replica reports the same cluster-wide numbers.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shared import lua
from shared.constants import (
    PRIORITIES,
    RUNNING_KEY,
    WEBHOOK_QUEUE,
    WEBHOOK_RETRY_KEY,
    WORKER_KEY_PREFIX,
    broker_lists,
    job_queues,
)
from shared.redis_replies import reply_text
from shared.store import PRIORITY_BAND, waiting_key
from shared.workers import WorkerInfo

# The model label of jobs that named no model: they wait in the shared queue,
# and whichever worker is free runs them.
ANY_MODEL = "any"
# The model label of workers that hold none (loading, or every load failed), and
# of running jobs whose worker's record has expired (the reaper will hand them back).
NO_MODEL = "none"
# Worker states in which a worker takes jobs (or is about to): darkroom_workers_serving.
SERVING_STATES = frozenset({"loading", "starting", "ready", "busy"})

# shared/lua/cluster_stats.lua
SCRIPT = lua.script("cluster_stats")


@dataclass
class ClusterStats:
    # (model, priority) -> queued jobs; model ANY_MODEL for the shared queue.
    queued: dict[tuple[str, str], int] = field(default_factory=dict)
    # model -> running jobs, by the model of the worker running them.
    running: dict[str, int] = field(default_factory=dict)
    # (model, state) -> live workers.
    workers: dict[tuple[str, str], int] = field(default_factory=dict)
    # model -> live workers that may run its jobs (hold it, or may load it on demand).
    serving: dict[str, int] = field(default_factory=dict)
    # Webhook deliveries queued or waiting for their retry time.
    webhook_backlog: int = 0


def script_call(models: list[str]) -> lua.Call:
    """The script for a registry with `models`."""
    webhook_lists = broker_lists(WEBHOOK_QUEUE)
    waiting = [waiting_key(q) for q in job_queues(models)]
    bands = []
    for rank in PRIORITIES.values():
        bands += [str(rank * PRIORITY_BAND), str((rank + 1) * PRIORITY_BAND)]
    keys = {
        "running": RUNNING_KEY,
        "webhook_retry": WEBHOOK_RETRY_KEY,
        "lists": [*webhook_lists, *waiting],
    }
    args = {
        "worker_pattern": WORKER_KEY_PREFIX + "*",
        "webhook_lists": len(webhook_lists),
        "bands": bands,
    }
    return SCRIPT.call(keys, args)


def parse(models: list[str], answer: list[Any]) -> ClusterStats:
    """ClusterStats from the script's answer for a registry with `models`."""
    raw_workers, running_on, backlog, counts = answer
    workers = [WorkerInfo.model_validate(json.loads(raw)) for raw in raw_workers]
    model_of = {w.name: w.model or NO_MODEL for w in workers}
    running = Counter(model_of.get(reply_text(name), NO_MODEL) for name in running_on)
    labels = [ANY_MODEL, *models]
    priorities = list(PRIORITIES)
    queued = {
        (labels[i // len(priorities)], priorities[i % len(priorities)]): int(count)
        for i, count in enumerate(counts)
    }
    return ClusterStats(
        queued=queued,
        running=dict(running),
        workers=dict(Counter((w.model or NO_MODEL, w.state) for w in workers)),
        serving=dict(Counter(m for w in workers if w.state in SERVING_STATES for m in w.loadable)),
        webhook_backlog=int(backlog),
    )
