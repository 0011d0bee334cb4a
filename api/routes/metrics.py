"""GET /metrics: Prometheus' text format (METRICS_ENABLED=false: 404).

Open like /healthz unless METRICS_TOKEN is set: then only a scraper sending it
as `Authorization: Bearer <token>` reads it. It holds counts, never a job id,
prompt or key, but queue depths and worker counts are still the operator's.
"""

import hmac
import logging

import redis
from fastapi import APIRouter, HTTPException, Request, Response

from api.deps import StateDep
from api.metrics import CONTENT_TYPE_LATEST
from shared.cluster_stats import ClusterStats, parse, script_call
from shared.errors import Unauthorized

router = APIRouter(tags=["system"])
log = logging.getLogger(__name__)


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep, request: Request) -> Response:
    """This API's request and submission counts, and the cluster's queues and workers."""
    if not state.settings.metrics_enabled:
        raise HTTPException(404, "metrics are off (METRICS_ENABLED=false)")
    _check_token(state, request.headers.get("authorization", ""))
    return Response(state.metrics.render(await _cluster(state)), media_type=CONTENT_TYPE_LATEST)


async def _cluster(state: StateDep) -> ClusterStats | None:
    models = list(state.registry.models)
    call = script_call(models)
    try:
        answer = await state.mux.run_script(call.lua, call.keys, call.args)
    except redis.RedisError as exc:
        log.warning("metrics: could not read the cluster's state from Redis: %s", exc)
        return None
    return parse(models, answer)


def _check_token(state: StateDep, authorization: str) -> None:
    token = state.settings.metrics_token
    if token is None:
        return
    scheme, _, sent = authorization.partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip().encode(), expected):
        raise Unauthorized(
            "/metrics needs the METRICS_TOKEN: send Authorization: Bearer <token>",
            error="invalid_token" if sent else None,
        )
