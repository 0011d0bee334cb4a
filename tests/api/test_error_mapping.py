"""api/errors.py is the one place that turns darkroom's errors into HTTP statuses."""

from __future__ import annotations

import inspect

import pytest

from api.errors import http_status
from shared import errors

EXPECTED = {
    "DarkroomError": 500,
    "ConfigError": 500,
    "ModelLoadError": 500,
    "GenerationError": 500,
    "InvalidRequest": 422,
    "ModelNotServed": 422,
    "Unauthorized": 401,
    "Forbidden": 403,
    "JobNotFound": 404,
    "FileNotFound": 404,
    "LoraNotFound": 404,
    "PreviewNotReady": 404,
    "LoraConflict": 409,
    "QuotaExceeded": 413,
    "InvalidTransition": 409,
    "IdempotencyConflict": 409,
    "RateLimited": 429,
    "ServiceUnavailable": 503,
    "StorageError": 503,
    "NotReplicated": 503,
}


def every_error_class() -> list[type[errors.DarkroomError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.DarkroomError)
    ]


def test_every_error_class_has_a_status_and_none_carries_one_itself() -> None:
    classes = every_error_class()
    assert {cls.__name__ for cls in classes} == set(EXPECTED), "add the new class to EXPECTED"
    for cls in classes:
        assert "status_code" not in vars(cls), f"{cls.__name__}: HTTP belongs in api/errors.py"


@pytest.mark.parametrize(("name", "status"), sorted(EXPECTED.items()))
def test_status_of_each_error(name: str, status: int) -> None:
    cls = getattr(errors, name)
    exc = cls.__new__(cls)  # the status depends on the class alone, not its arguments
    assert http_status(exc) == status
