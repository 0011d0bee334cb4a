"""Fixtures of the unit tests of darkroom's own Redis code: fakeredis and a job store on it."""

from __future__ import annotations

import fakeredis
import pytest

from shared.store import JobStore

# The job store's retention in these tests.
TTL_S = 600


@pytest.fixture
def client() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def store(client: fakeredis.FakeRedis) -> JobStore:
    return JobStore(client, TTL_S)
