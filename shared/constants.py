"""Names and lifetimes that the API and the workers must agree on.

Every Redis key darkroom writes starts with one of these prefixes, so an
operator can find (or delete) all of darkroom's data with one SCAN pattern.
"""

from collections.abc import Iterable

KEY_PREFIX = "darkroom:"

# One hash per job: the record clients read at GET /jobs/{id}.
JOB_KEY_PREFIX = KEY_PREFIX + "job:"
# The decoded init image of an img2img job, kept apart from the record so that
# polling a job never ships megabytes of base64 back and forth.
JOB_INPUT_KEY_PREFIX = KEY_PREFIX + "job-input:"
# One hash per live worker, refreshed by its heartbeat and expiring with it.
WORKER_KEY_PREFIX = KEY_PREFIX + "worker:"
# A sorted set per Celery queue of the jobs waiting in it, scored by priority
# then arrival: ZRANK is a job's queue position without scanning the broker.
WAITING_KEY_PREFIX = KEY_PREFIX + "waiting:"
# All jobs by creation time (newest-first listing with a cursor).
JOBS_INDEX_KEY = KEY_PREFIX + "jobs"
# Set while a client asked a running job to stop; the worker checks it each step.
CANCEL_KEY_PREFIX = KEY_PREFIX + "cancel:"
# Per API key rate limits: the times of its accepted jobs over the last minute
# (sorted set, ms scores), and the ids of its jobs that may still be queued or
# running (sorted set); both trimmed as they are read.
SUBMITS_KEY_PREFIX = KEY_PREFIX + "rate:submits:"
ACTIVE_KEY_PREFIX = KEY_PREFIX + "rate:active:"
# Idempotency-Key -> the job it created (and a hash of the request), for 24 h.
IDEMPOTENCY_KEY_PREFIX = KEY_PREFIX + "idempotency:"
IDEMPOTENCY_TTL_S = 24 * 3600
# The AUTOMATIC1111 API's options per API key (a hash: sd_model_checkpoint, the
# model its txt2img/img2img calls use when they name none), as A1111 keeps them
# per server; no expiry, like A1111's config.json.
A1111_OPTIONS_KEY_PREFIX = KEY_PREFIX + "a1111-options:"
# Webhooks: the log of delivery attempts per job (a list), the state of each
# event's delivery (a hash), and deliveries waiting for their retry time (a
# sorted set by due time; Celery ETAs on Redis would be redelivered after the
# visibility timeout, and webhook retries span a day).
WEBHOOK_LOG_KEY_PREFIX = KEY_PREFIX + "webhook-log:"
WEBHOOK_STATE_KEY_PREFIX = KEY_PREFIX + "webhook-state:"
WEBHOOK_RETRY_KEY = KEY_PREFIX + "webhook-retry"
# Per API key, the deliveries running now (a sorted set of leases scored by when
# each expires): WEBHOOK_MAX_PER_KEY caps it, and the lease of a delivery thread
# that died expires on its own instead of taking a slot for good.
WEBHOOK_LEASES_KEY_PREFIX = KEY_PREFIX + "webhook-leases:"
# Deliveries have their own queue, served by a light worker, never a GPU one.
WEBHOOK_QUEUE = "darkroom.webhooks"
WEBHOOK_TASK = "darkroom.deliver_webhook"
# At most one progress event per job per second.
WEBHOOK_PROGRESS_INTERVAL_S = 1.0

# Job records and their inputs outlive the job by this long (24 h), then expire.
DEFAULT_JOB_TTL_S = 24 * 3600
# Running jobs -> the worker running them. The reaper hands back to the queue
# the jobs of workers whose record expired (their heartbeat stopped).
RUNNING_KEY = KEY_PREFIX + "running"
# Queued jobs a worker holds the message of, prepared to run next -> that worker.
# The reaper gives a dead holder's job a new message (kombu would give the old
# one back only after its visibility timeout, hours).
HELD_KEY = KEY_PREFIX + "held"
# Bumped after a status change that must survive a failover: WAIT then covers it
# (one replication stream: a replica holding this write holds every earlier one).
REPLICATION_MARK_KEY = KEY_PREFIX + "replication-mark"

# Celery queues. Jobs that name a model go to that model's queue and only run
# on a worker holding it; jobs that do not go to the shared default queue.
DEFAULT_QUEUE = "darkroom.default"
MODEL_QUEUE_PREFIX = "darkroom.model."
# A worker that could load no model consumes only its own private queue, which
# nothing publishes to: it stays up (so GET /status can say why) and takes no job.
NO_MODEL_QUEUE_PREFIX = "darkroom.idle."
GENERATE_TASK = "darkroom.generate"
# Each worker also consumes a queue of its own, where its heartbeat puts a wake-up
# token when the worker is idle and its queues hold work (docs/scheduling.md).
PRIVATE_QUEUE_PREFIX = "darkroom.worker."

# Storage outages (worker.storing): a job's images wait in the worker's local spool
# and are retried this long before the job fails with storage_error; five minutes
# rides out an object store's restart or failover. Backoff between tries doubles
# up to the cap, AWS SDKs' own (20 s): an outage's end is seen within it.
DEFAULT_STORAGE_RETRY_S = 300.0
DEFAULT_STORAGE_RETRY_MAX_DELAY_S = 20.0
# The spool's budget: a worker whose spool holds this much takes no new job. A
# 1024x1024 PNG is 1-2 MB, so 1 GiB holds 500+ images: minutes of even a fast
# GPU's output (a blip never stops it), and small beside a worker's disk (or the
# RAM of a tmpfs /tmp).
DEFAULT_STORAGE_SPOOL_BYTES = 1024**3

# Fair shares (docs/scheduling.md): a key's usage (the estimated GPU-seconds of the
# jobs it was given) halves every this many seconds, so the last ten minutes or
# so decide whose turn it is (FAIR_SHARE_HALF_LIFE_S).
DEFAULT_FAIR_SHARE_HALF_LIFE_S = 600.0
# A worker holding several models runs the jobs of the models on its device first;
# a job that needs a swap goes first once it waited this much longer than they did
# (and no other worker holds its model): swaps come in groups, none starves.
DEFAULT_SWAP_AFTER_S = 30.0

# Progress is written at most this often per job: a step of a tiny model takes
# milliseconds, and a Redis round trip per step would cost more than the step.
PROGRESS_WRITE_INTERVAL_S = 0.25


# Job priorities as Celery message priorities on Redis (0 is served first):
# kombu keeps one list per step and pops the lists in order.
PRIORITIES = {"high": 0, "normal": 3, "low": 6}
PRIORITY_STEPS = [0, 3, 6, 9]
PRIORITY_SEPARATOR = ":"


def broker_lists(queue: str) -> list[str]:
    """The Redis lists kombu keeps for `queue`, highest priority first."""
    return [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]


def model_queue(model: str) -> str:
    """The Celery queue that feeds workers serving `model`."""
    return MODEL_QUEUE_PREFIX + model


def job_queues(models: Iterable[str]) -> list[str]:
    """Every queue jobs of a registry with `models` can wait in: the shared one first."""
    return [DEFAULT_QUEUE, *(model_queue(m) for m in models)]
