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

# KEYS: the running index, the webhook retry set, the webhook queue's broker
# lists, then the waiting sets. ARGV: the worker key pattern, the number of
# webhook lists, then each priority band's [min, max) scores.
SCRIPT = """
local workers = {}
local cursor = "0"
repeat
  local page = redis.call("SCAN", cursor, "MATCH", ARGV[1], "COUNT", 1000)
  cursor = page[1]
  for _, key in ipairs(page[2]) do
    local value = redis.call("GET", key)
    if value then table.insert(workers, value) end
  end
until cursor == "0"
local running = redis.call("HVALS", KEYS[1])
local backlog = redis.call("ZCARD", KEYS[2])
local lists = tonumber(ARGV[2])
for i = 1, lists do
  backlog = backlog + redis.call("LLEN", KEYS[2 + i])
end
local counts = {}
for k = 3 + lists, #KEYS do
  for b = 3, #ARGV, 2 do
    table.insert(counts, redis.call("ZCOUNT", KEYS[k], ARGV[b], "(" .. ARGV[b + 1]))
  end
end
return {workers, running, backlog, counts}
"""


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


def script_call(models: list[str]) -> tuple[list[str], list[str]]:
    """The KEYS and ARGV of the script for a registry with `models`."""
    lists = broker_lists(WEBHOOK_QUEUE)
    queues = job_queues(models)
    keys = [RUNNING_KEY, WEBHOOK_RETRY_KEY, *lists, *(waiting_key(q) for q in queues)]
    bands = []
    for rank in PRIORITIES.values():
        bands += [str(rank * PRIORITY_BAND), str((rank + 1) * PRIORITY_BAND)]
    return keys, [WORKER_KEY_PREFIX + "*", str(len(lists)), *bands]


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
