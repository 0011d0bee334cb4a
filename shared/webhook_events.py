"""Job events (start, progress, completed) turned into webhook deliveries on their own queue."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from celery import Celery

from shared.constants import WEBHOOK_PROGRESS_INTERVAL_S, WEBHOOK_QUEUE, WEBHOOK_TASK
from shared.jobs import JobRecord, utcnow
from shared.public import read_views
from shared.settings import Settings
from shared.storage import Storage
from shared.store import JobStore
from shared.webhooks import EVENT_TYPES, receiver_gone

log = logging.getLogger(__name__)


class WebhookEmitter:
    """Called by the job store after each status change and progress write."""

    def __init__(self, celery: Celery, settings: Settings, storage: Storage):
        self.celery = celery
        self.settings = settings
        self.storage = storage
        self._last_progress: dict[str, float] = {}

    def __call__(self, store: JobStore, record: JobRecord, event: str) -> None:
        if record.webhook is None:
            return
        if event == "completed":
            # Whatever its filter: a job that asked only for progress must not
            # leave its throttle entry behind for the worker's lifetime.
            self._last_progress.pop(record.id, None)
        if event not in record.webhook_events_filter:
            return
        if event == "progress" and not self._progress_due(record.id):
            return
        try:
            if receiver_gone(store.redis, record.id):
                return
            self.celery.send_task(
                WEBHOOK_TASK, args=[self._delivery(store, record, event)], queue=WEBHOOK_QUEUE
            )
        except Exception as exc:  # noqa: BLE001 - a webhook must never fail the job it reports on
            log.error("could not queue %s webhook for job %s: %s", event, record.id, exc)

    def _progress_due(self, job_id: str) -> bool:
        now = time.monotonic()
        if now - self._last_progress.get(job_id, 0.0) < WEBHOOK_PROGRESS_INTERVAL_S:
            return False
        self._last_progress[job_id] = now
        return True

    def _delivery(self, store: JobStore, record: JobRecord, event: str) -> dict[str, Any]:
        [job] = read_views(
            store.redis,
            [record],
            self.storage,
            self.settings.public_base_url,
            self.settings.fair_share_half_life_s,
        )
        payload = {
            "type": EVENT_TYPES[event],
            "timestamp": utcnow().isoformat(),
            "data": job.model_dump(mode="json"),
        }
        return {
            "event_id": f"msg_{uuid.uuid4().hex}",
            "event": EVENT_TYPES[event],
            "job_id": record.id,
            # Whose job it is: the webhook worker runs at most WEBHOOK_MAX_PER_KEY
            # deliveries of one owner at once.
            "owner": record.owner,
            "url": record.webhook,
            "body": json.dumps(payload, separators=(",", ":")),
            "attempt": 1,
        }
