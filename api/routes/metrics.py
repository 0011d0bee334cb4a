"""GET /metrics: Prometheus' text format, open like /healthz (METRICS_ENABLED=false: 404)."""

import logging

import redis
from fastapi import APIRouter, HTTPException, Response

from api.deps import StateDep
from api.metrics import CONTENT_TYPE_LATEST
from shared.cluster_stats import SCRIPT, ClusterStats, parse, script_call

router = APIRouter(tags=["system"])
log = logging.getLogger(__name__)


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> Response:
    """This API's request and submission counts, and the cluster's queues and workers."""
    if not state.settings.metrics_enabled:
        raise HTTPException(404, "metrics are off (METRICS_ENABLED=false)")
    return Response(state.metrics.render(await _cluster(state)), media_type=CONTENT_TYPE_LATEST)


async def _cluster(state: StateDep) -> ClusterStats | None:
    models = list(state.registry.models)
    keys, argv = script_call(models)
    try:
        answer = await state.aredis.eval(SCRIPT, len(keys), *keys, *argv)
    except redis.RedisError as exc:
        log.warning("metrics: could not read the cluster's state from Redis: %s", exc)
        return None
    return parse(models, answer)
