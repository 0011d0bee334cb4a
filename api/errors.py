"""Every error the API answers with is shaped and mapped here, and nowhere else.

Body: {"error": {"type", "message", "field"?}, "detail": ...}. Clients never
see a stack trace: unexpected errors are logged with theirs and answered 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

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
    errors.JobNotFound: 404,
    errors.FileNotFound: 404,
    errors.InvalidTransition: 409,
    errors.IdempotencyConflict: 409,
    errors.RateLimited: 429,
    errors.ServiceUnavailable: 503,
    errors.StorageError: 503,
}


def http_status(exc: DarkroomError) -> int:
    return next(HTTP_STATUS[cls] for cls in type(exc).__mro__ if cls in HTTP_STATUS)


async def _darkroom_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DarkroomError)
    # An error may carry headers (WWW-Authenticate, Retry-After) and a structured detail.
    return error_response(
        http_status(exc),
        exc.type,
        str(exc),
        getattr(exc, "field", None),
        exc.detail,
        exc.headers,
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if errors and errors[0]["type"] == "json_invalid":
        return error_response(422, "validation_error", "request body is not valid JSON")
    messages = []
    for err in errors:
        field = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
        messages.append(f"{field}: {err['msg']}")
    first_field = ".".join(str(p) for p in errors[0]["loc"] if p != "body") if errors else None
    detail = [{"loc": e["loc"], "msg": e["msg"], "type": e["type"]} for e in errors]
    return error_response(422, "validation_error", "; ".join(messages), first_field, detail)


async def _backend_down(_: Request, exc: Exception) -> JSONResponse:
    log.error("backing service unavailable: %s: %s", type(exc).__name__, exc)
    return error_response(
        503, "service_unavailable", "the job queue (Redis) is unreachable; try again shortly"
    )


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, "http_error", str(exc.detail), headers=exc.headers)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal error; see the API log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DarkroomError, _darkroom_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(redis.ConnectionError, _backend_down)
    app.add_exception_handler(redis.TimeoutError, _backend_down)
    app.add_exception_handler(OperationalError, _backend_down)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
