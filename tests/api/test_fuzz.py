"""Property-based requests generated from the OpenAPI schema: no input may cause a 5xx.

Schemathesis derives valid and invalid requests for every operation (bodies,
paths, queries, headers) and calls the app in-process, on the flushed test
Redis with no worker behind it. API keys are on and each request carries a
valid key, so the requests reach the handlers rather than stopping at the 401.

The test drives schemathesis' strategies with plain Hypothesis rather than its
pytest plugin: the plugin reaches into pytest's private node attributes and
broke with pytest 9 (`'Function' object has no attribute '_nodeid'`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import redis
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi

from api.main import create_app
from shared.settings import Settings

# Schemathesis generates hundreds of requests.
pytestmark = pytest.mark.slow

KEY = "fuzz-key-0123456789abcdef"
# Small and repeatable by default (a few seconds); set DARKROOM_FUZZ_EXAMPLES to
# explore further, with fresh random inputs on each run.
EXAMPLES = int(os.environ.get("DARKROOM_FUZZ_EXAMPLES", "0")) or None


@pytest.fixture
def fuzz_app(make_settings: Callable[..., Settings], api_redis: redis.Redis) -> Iterator[FastAPI]:
    yield create_app(make_settings(api_keys=KEY))
    # Schemathesis keeps the app's lifespan running for reuse; end it with the test.
    asgi.shutdown_lifespans()


def check_case(case: schemathesis.Case) -> None:
    if case.headers:
        # `Prefer: wait` would hold each request for up to a minute (no worker runs).
        case.headers.pop("prefer", None)
        case.headers.pop("Prefer", None)
    case.call_and_validate(
        headers={"Authorization": f"Bearer {KEY}"}, checks=[not_a_server_error], timeout=30
    )


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_causes_a_server_error(fuzz_app: FastAPI, mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8, "the schema lost its operations"
    fuzzed = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES or 15,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            derandomize=EXAMPLES is None,
        )
        def fuzz(case: schemathesis.Case) -> None:
            check_case(case)

        try:
            fuzz()
        except Unsatisfiable:
            # An operation with no parameters and no body (GET /healthz) has no invalid form.
            assert mode is GenerationMode.NEGATIVE, f"no valid request for {operation.label}"
            continue
        fuzzed += 1
    assert fuzzed >= len(operations) // 2, f"only {fuzzed} operations could be fuzzed"
