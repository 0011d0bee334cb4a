"""API keys: who is calling. `OwnerDep` is the caller's identity, for routers and routes.

With keys configured (API_KEYS, API_KEYS_FILE) every route behind
`require_owner` needs `Authorization: Bearer <key>`, answered 401 otherwise.
The identity is a short id derived from the key's digest, stored on the jobs
the key submits. Without keys the API is open and every caller is "anonymous".
Keys and the Authorization header are never logged.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.apikeys import ANONYMOUS, KeyRing
from shared.errors import Unauthorized

log = logging.getLogger(__name__)

# auto_error=False: a missing header is our 401 (with our error body), not FastAPI's.
# The scheme also puts the "Authorize" button on the /docs page.
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`.")


def log_auth_mode(keys: KeyRing) -> None:
    """Say at start whether the API is protected; never which keys it accepts."""
    if keys.enabled:
        log.info("API keys: %d configured; requests need Authorization: Bearer <key>", len(keys))
    else:
        log.warning("no API keys configured: the API is open to anyone who can reach it")


async def require_owner(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The caller's identity; 401 when keys are configured and none (or a wrong one) is sent.

    Async: hashing one key takes microseconds, not worth a thread-pool hop per request.
    """
    keys: KeyRing = request.app.state.darkroom.keys
    if not keys.enabled:
        return ANONYMOUS
    if credentials is None:
        raise Unauthorized("an API key is required: send Authorization: Bearer <key>")
    owner = keys.owner_of(credentials.credentials)
    if owner is None:
        raise Unauthorized("invalid API key", error="invalid_token")
    return owner


OwnerDep = Annotated[str, Depends(require_owner)]

# For the OpenAPI schema of the routes behind `require_owner`.
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or not a valid one (when API keys are configured)."}
}
