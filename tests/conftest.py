"""Shared fixtures: real redis-servers, the trained model and one Rasa stack per test run."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from devtools.model import ensure_model
from devtools.processes import RedisServer, free_port
from devtools.stack import RasaStack, local_secrets, with_rest_channel


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


@pytest.fixture(scope="session")
def trained_model() -> Path:
    return ensure_model(quiet=True)


@pytest.fixture(scope="session")
def stack_redis(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    """The Redis behind the shared Rasa stack (never flushed: the stack's state lives there)."""
    server = RedisServer(tmp_path_factory.mktemp("stack-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rasa_stack(
    trained_model: Path, stack_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> RasaStack:
    """One action server and one Rasa server with every connector, for the whole test run.

    Loading a model takes tens of seconds, so tests share this stack and keep their
    conversations apart by using fresh phone numbers and user ids.
    """
    work = tmp_path_factory.mktemp("stack")
    credentials = with_rest_channel(work)
    rasa_port = free_port()
    env = {**local_secrets(rasa_port), "REDIS_URL": stack_redis.url}
    stack = RasaStack(
        model=trained_model,
        env=env,
        credentials=credentials,
        log_dir=work / "logs",
        rasa_port=rasa_port,
    )
    try:
        stack.start()
    except Exception:
        print(stack.rasa_log()[-5000:])
        stack.stop()
        raise
    yield stack
    stack.stop()
