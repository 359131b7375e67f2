"""The fast tier: tests marked ``unit`` run in ``make check`` and must stay pure.

A unit test checks logic in this process: no server (nothing listens on a socket), no child
process (``redis-server``, Rasa, a browser), no trained model loaded. That is what lets
``make check`` answer in seconds. The rule is enforced, not trusted: while a unit test is set
up, run and torn down (fixtures of every scope included), starting any of those raises
:class:`NotAUnitTest`, so a test that grows a server fails in both tiers instead of quietly
making the fast one slow. A unit test that asks for a fixture of :data:`SERVER_FIXTURES` is
refused at collection.

Mark a whole module with ``pytestmark = pytest.mark.unit``, or single tests with
``@pytest.mark.unit`` where a module mixes both kinds.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
from typing import Any, Callable, Iterator, List, Tuple

import pytest

UNIT = "unit"

#: Fixtures that start servers or processes (tests/conftest.py and the channel conftests).
SERVER_FIXTURES = frozenset(
    {
        "rasa_stack",
        "rasa_replica",
        "stack",
        "trained_model",
        "stack_redis",
        "redis_server",
        "redis_url",
        "redis_cluster",
        "redis_sentinel",
        "redis_deployment",
        "fake_llm",
        "fake_twilio",
        "control",
        "make_call",
    }
)


class NotAUnitTest(AssertionError):
    """A test marked ``unit`` started a server, a process or a model."""


def _refuse(what: str) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        raise NotAUnitTest(
            f"a unit test may not {what}: drop its `unit` mark (it then runs in `make test` "
            "only) or test the logic without it"
        )

    return refused


def _targets() -> List[Tuple[Any, str, str]]:
    """(owner, attribute, what it does) of every operation a unit test may not use."""
    # Every way Rasa loads a trained model (Agent.load, load_agent, rasa run) unpacks it here.
    from rasa.engine.storage.local_model_storage import LocalModelStorage

    return [
        (socket.socket, "listen", "listen on a socket (start a server)"),
        (subprocess.Popen, "_execute_child", "start a process"),
        (os, "fork", "fork"),
        (os, "posix_spawn", "start a process"),
        (LocalModelStorage, "from_model_archive", "load a trained model"),
    ]


@contextlib.contextmanager
def no_servers() -> Iterator[None]:
    """Within the block, listening, spawning and loading a model raise NotAUnitTest."""
    targets = _targets()
    saved = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in targets]
    try:
        for owner, name, what in targets:
            setattr(owner, name, _refuse(what))
        yield
    finally:
        for owner, name, original in saved:
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def is_unit(item: pytest.Item) -> bool:
    return item.get_closest_marker(UNIT) is not None


def refuse_server_fixtures(items: List[pytest.Item]) -> None:
    """Collection-time half of the rule: a unit test naming a server fixture is an error."""
    for item in items:
        if not is_unit(item):
            continue
        servers = sorted(SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())))
        if servers:
            raise pytest.UsageError(
                f"{item.nodeid} is marked unit but uses {', '.join(servers)}, which start "
                "servers: drop the mark or the fixture"
            )


@contextlib.contextmanager
def guarded(item: pytest.Item) -> Iterator[None]:
    if is_unit(item):
        with no_servers():
            yield
    else:
        yield
