"""Every error the API answers with is shaped and mapped here, and nowhere else.

Body: {"error": {"type", "message", "field"?}, "detail": ...}. Clients never
see a stack trace: unexpected errors are logged with theirs and answered 500.

The compatible APIs answer in their own dialects, chosen by path: under /v1,
OpenAI's {"error": {"message", "type", "param", "code"}} with OpenAI's statuses
(400 for a bad parameter, 404 for an unknown model); under /sdapi/v1,
AUTOMATIC1111's {"error": <exception name>, "detail", "body", "errors"}.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.compat import A1111_PREFIX, OPENAI_PREFIX
from api.compat.errors import (
    EndpointUnavailable,
    JobCanceled,
    JobDidNotSucceed,
    UnknownModel,
    WaitTimedOut,
)
from shared import errors
from shared.errors import DarkroomError

log = logging.getLogger(__name__)


def error_response(
    status: int,
    type_: str,
    message: str,
    field: str | None = None,
    detail: object = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, object] = {"type": type_, "message": message}
    if field:
        error["field"] = field
    return JSONResponse(
        status_code=status,
        content={"error": error, "detail": detail if detail is not None else message},
        headers=headers,
    )


# darkroom's errors as HTTP statuses: the only place that knows them. A class
# not listed takes its nearest listed base class's status (500 for the base).
HTTP_STATUS: dict[type[DarkroomError], int] = {
    errors.DarkroomError: 500,
    errors.InvalidRequest: 422,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.JobNotFound: 404,
    errors.FileNotFound: 404,
    errors.PreviewNotReady: 404,
    errors.LoraNotFound: 404,
    errors.LoraConflict: 409,
    errors.QuotaExceeded: 413,
    errors.InvalidTransition: 409,
    errors.IdempotencyConflict: 409,
    errors.RateLimited: 429,
    errors.ServiceUnavailable: 503,
    errors.StorageError: 503,
    # The compatible APIs' (api.compat): their calls wait for the jobs they made.
    WaitTimedOut: 504,
    JobDidNotSucceed: 500,
    JobCanceled: 409,
    EndpointUnavailable: 501,
}
# Where OpenAI's statuses differ: a bad parameter is its 400, an unknown model its 404.
OPENAI_STATUS: dict[type[DarkroomError], int] = {
    errors.InvalidRequest: 400,
    UnknownModel: 404,
    errors.ModelNotServed: 404,
}
# A1111 answers an unknown checkpoint (and sampler) with 404 "not found".
A1111_STATUS: dict[type[DarkroomError], int] = {UnknownModel: 404, errors.ModelNotServed: 404}


def http_status(
    exc: DarkroomError, overrides: Mapping[type[DarkroomError], int] | None = None
) -> int:
    """The status of `exc`'s nearest listed class (`overrides` first: a dialect's own)."""
    for cls in type(exc).__mro__:
        if overrides and cls in overrides:
            return overrides[cls]
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


@dataclass(frozen=True)
class Failure:
    """One error, before it takes the shape of the dialect it is answered in."""

    status: int
    type: str  # darkroom's machine-readable name (error.type)
    message: str
    exception: str  # the exception's class name (A1111 names its errors by it)
    field: str | None = None
    detail: object = None
    headers: Mapping[str, str] | None = None
    # OpenAI's `status` and `code`, where they differ from darkroom's.
    openai_status: int | None = None
    openai_code: str | None = None


def _answer(request: Request, failure: Failure) -> JSONResponse:
    path = request.url.path
    if _under(path, OPENAI_PREFIX):
        return _openai_response(failure)
    if _under(path, A1111_PREFIX):
        return _a1111_response(failure)
    return error_response(
        failure.status,
        failure.type,
        failure.message,
        failure.field,
        failure.detail,
        failure.headers,
    )


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


# darkroom's error types as OpenAI's codes, where OpenAI has a name of its own.
_OPENAI_CODES = {
    "unauthorized": "invalid_api_key",
    "rate_limited": "rate_limit_exceeded",
    "model_not_served": "model_not_found",
}


def _openai_response(failure: Failure) -> JSONResponse:
    status = failure.openai_status or failure.status
    if status == 429:
        kind = "requests"  # OpenAI's type for a rate limit on requests
    elif status >= 500:
        kind = "server_error"
    else:
        kind = "invalid_request_error"
    code = failure.openai_code or _OPENAI_CODES.get(failure.type, failure.type)
    error = {"message": failure.message, "type": kind, "param": failure.field, "code": code}
    return JSONResponse(status_code=status, content={"error": error}, headers=failure.headers)


def _a1111_response(failure: Failure) -> JSONResponse:
    # As A1111's own handler: the exception's name, its detail, the body, its text.
    detail = failure.detail if isinstance(failure.detail, list) else failure.message
    content = {"error": failure.exception, "detail": detail, "body": "", "errors": failure.message}
    return JSONResponse(status_code=failure.status, content=content, headers=failure.headers)


async def _darkroom_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DarkroomError)
    # An error may carry headers (WWW-Authenticate, Retry-After) and a structured detail.
    a1111 = _under(request.url.path, A1111_PREFIX)
    failure = Failure(
        status=http_status(exc, A1111_STATUS if a1111 else None),
        type=exc.type,
        message=str(exc),
        exception=type(exc).__name__,
        field=getattr(exc, "field", None),
        detail=exc.detail,
        headers=exc.headers,
        openai_status=http_status(exc, OPENAI_STATUS),
    )
    return _answer(request, failure)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        failure = Failure(422, "validation_error", "request body is not valid JSON", _name(exc))
        return _answer(request, _as_bad_request(failure))
    messages = []
    for err in errors:
        field = _field(err) or "body"
        messages.append(f"{field}: {err['msg']}")
    detail = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in errors]
    first = errors[0] if errors else {}
    failure = Failure(
        status=422,
        type="validation_error",
        message="; ".join(messages),
        exception=_name(exc),
        field=_field(first) if first else None,
        detail=detail,
    )
    if first.get("type") == "extra_forbidden":
        # OpenAI's words and code for a parameter it does not know.
        failure = replace(
            failure,
            message=f"Unrecognized request argument supplied: {failure.field}",
            openai_code="unknown_parameter",
        )
    return _answer(request, _as_bad_request(failure))


def _as_bad_request(failure: Failure) -> Failure:
    """OpenAI answers any invalid request 400 (darkroom 422)."""
    return replace(failure, openai_status=400)


def _field(err: Mapping[str, Any]) -> str | None:
    return ".".join(str(p) for p in err["loc"] if p != "body") or None


def _name(exc: Exception) -> str:
    return type(exc).__name__


async def _backend_down(request: Request, exc: Exception) -> JSONResponse:
    log.error("backing service unavailable: %s: %s", type(exc).__name__, exc)
    message = "the job queue (Redis) is unreachable; try again shortly"
    return _answer(request, Failure(503, "service_unavailable", message, _name(exc)))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    failure = Failure(
        exc.status_code, "http_error", str(exc.detail), _name(exc), headers=exc.headers
    )
    return _answer(request, failure)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    message = "internal error; see the API log"
    return _answer(request, Failure(500, "internal_error", message, _name(exc)))


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DarkroomError, _darkroom_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(redis.ConnectionError, _backend_down)
    app.add_exception_handler(redis.TimeoutError, _backend_down)
    app.add_exception_handler(OperationalError, _backend_down)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
