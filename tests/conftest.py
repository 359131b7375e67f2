"""Shared fixtures: a real redis-server per test run, and a clean database per test."""

from __future__ import annotations

import pytest
import redis

from devtools.processes import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """URL of the real test Redis, emptied before the test and exported as REDIS_URL."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    return redis_server.url
