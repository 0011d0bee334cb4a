"""The webhook worker's Prometheus metrics (worker.metrics_server serves them)."""

from prometheus_client import Counter, Histogram, disable_created_metrics

# Counters and histograms without a `_created` series each: half the series, and
# Prometheus does not use them.
disable_created_metrics()  # type: ignore[no-untyped-call]

WEBHOOK_DELIVERIES = Counter(
    "darkroom_webhook_deliveries",
    "Webhook delivery attempts by outcome (delivered, retrying, failed, gone).",
    ["outcome"],
)
# Every outcome exposed at 0 from the start: the first failure is an increase.
for _outcome in ("delivered", "retrying", "failed", "gone"):
    WEBHOOK_DELIVERIES.labels(_outcome)

WEBHOOK_DELIVERY_SECONDS = Histogram(
    "darkroom_webhook_delivery_seconds",
    "One delivery attempt, resolve to response (WEBHOOK_TIMEOUT_S bounds it).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

WEBHOOK_DEFERRED = Counter(
    "darkroom_webhook_deferred",
    "Deliveries put back for a moment, no attempt made, because their API key "
    "already had WEBHOOK_MAX_PER_KEY deliveries running.",
)
