"""API keys: who is calling. `OwnerDep` is the caller's identity, for routers and routes.

With keys configured (API_KEYS, API_KEYS_FILE) every route behind
`require_owner` needs `Authorization: Bearer <key>` (on /sdapi/v1 also HTTP
Basic, the key as the password, as A1111's clients send), answered 401 otherwise.
The identity is a short id derived from the key's digest, stored on the jobs
the key submits. Without keys the API is open and every caller is "anonymous".
Keys and the Authorization header are never logged.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from api.compat import A1111_PREFIX
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
        if credentials is not None:
            owner = keys.owner_of(credentials.credentials)
        elif request.url.path.startswith(A1111_PREFIX) and (basic := basic_keys(request)):
            owner = next(filter(None, map(keys.owner_of, basic)), None)
        else:
            a1111 = request.url.path.startswith(A1111_PREFIX)
            raise Unauthorized(_MISSING + (_OR_BASIC if a1111 else ""))
        if owner is None:
            raise Unauthorized("invalid API key", error="invalid_token")
        return owner


# AUTOMATIC1111's clients (Open WebUI, SillyTavern, webuiapi's set_auth) log in with
# HTTP Basic, as A1111's --api-auth user:password wants: on /sdapi/v1 the key is
# the password, or the whole user:password.
_MISSING = "an API key is required: send Authorization: Bearer <key>"
_OR_BASIC = ", or HTTP Basic with the key as the password"


def basic_keys(request: Request) -> list[str]:
    """The keys an `Authorization: Basic` header may carry: its password, then the
    whole user:password (none for another scheme or a malformed header)."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return []
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return []
    _user, colon, password = decoded.partition(":")
    if not colon:
        return []
    return [key for key in (password, decoded) if key]


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
