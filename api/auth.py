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
from fastapi.security import HTTPBearer

from shared.apikeys import ANONYMOUS, KeyRing
from shared.errors import Unauthorized

log = logging.getLogger(__name__)


def log_auth_mode(keys: KeyRing) -> None:
    """Say at start whether the API is protected; never which keys it accepts."""
    if keys.enabled:
        log.info("API keys: %d configured; requests need Authorization: Bearer <key>", len(keys))
    else:
        log.warning("no API keys configured: the API is open to anyone who can reach it")


class _ApiKeyBearer(HTTPBearer):
    """The caller's identity from `Authorization: Bearer <key>`, as one dependency.

    A subclass, not a dependency on an HTTPBearer: every route runs it, and each
    level of dependencies costs FastAPI more per request than the check itself.
    Being the security scheme puts the "Authorize" button on the /docs page.
    """

    async def __call__(self, request: Request) -> str:  # type: ignore[override]
        """401 when keys are configured and none (or a wrong one) is sent.

        Async: hashing one key takes microseconds, not worth a thread-pool hop.
        """
        keys: KeyRing = request.app.state.darkroom.keys
        owner = await self._owner(request, keys) if keys.enabled else ANONYMOUS
        request.state.owner = owner  # for caller()
        return owner

    async def _owner(self, request: Request, keys: KeyRing) -> str:
        # auto_error=False: a missing header is our 401 (with our error body), not FastAPI's.
        credentials = await super().__call__(request)
        if credentials is None:
            raise Unauthorized("an API key is required: send Authorization: Bearer <key>")
        owner = keys.owner_of(credentials.credentials)
        if owner is None:
            raise Unauthorized("invalid API key", error="invalid_token")
        return owner


require_owner = _ApiKeyBearer(
    auto_error=False,
    scheme_name="HTTPBearer",
    description="An API key: `Authorization: Bearer <key>`.",
)
OwnerDep = Annotated[str, Depends(require_owner)]


def caller(request: Request) -> str:
    """The identity require_owner established for this request, without OwnerDep.

    For the hot routes (poll, submit), where each dependency FastAPI resolves
    costs more than the check itself; every router behind require_owner runs it
    first.
    """
    return request.state.owner  # type: ignore[no-any-return]


# For the OpenAPI schema of the routes behind `require_owner`.
UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"description": "No API key, or not a valid one (when API keys are configured)."}
}
