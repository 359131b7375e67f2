"""How every whole-stack benchmark starts: the trained model, a Redis of its own in a temporary
directory, and Rasa servers (each with its action server) on free ports with local secrets.

    with bench_setup() as setup:
        fake = setup.keep(FakeLlm().start())          # stopped at the end, last kept first
        stack = setup.rasa(with_rest_channel(setup.work), OPENAI_BASE_URL=fake.base_url)
        stack.start()
        ...

Everything kept (the Rasa stacks, the fakes, Redis) is stopped when the block ends, however it
ends, so a benchmark that fails leaves no process behind.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Protocol, TypeVar, Union

from devtools.model import ensure_model
from testkit.processes import RedisServer, free_port
from testkit.stack import RasaStack, local_secrets


class Stoppable(Protocol):
    def stop(self) -> None: ...


Kept = TypeVar("Kept", bound=Stoppable)


class BenchSetup:
    """One benchmark's model, Redis and temporary directory, and what it started on them."""

    def __init__(self, model: Path, work: Path, redis: RedisServer) -> None:
        self.model = model
        self.work = work
        self.redis = redis
        self._kept: List[Stoppable] = [redis]

    def keep(self, started: Kept) -> Kept:
        """Stops ``started`` when the benchmark ends (after everything kept later)."""
        self._kept.append(started)
        return started

    def rasa(
        self,
        credentials: Union[Path, Callable[[Dict[str, str]], Path]],
        *,
        name: str = "",
        endpoints: Optional[Path] = None,
        **env: str,
    ) -> RasaStack:
        """A Rasa server (not started) on this Redis and model, on a free port with fresh local
        secrets and ``env`` on top. ``credentials`` is a file, or makes one from the server's
        environment (a stock channel configured with its secrets); ``name`` keeps the server's
        logs apart from another one's."""
        port = free_port()
        environment = {**local_secrets(port), "REDIS_URL": self.redis.url, **env}
        if callable(credentials):
            credentials = credentials(environment)
        stack = RasaStack(
            model=self.model,
            env=environment,
            credentials=credentials,
            log_dir=self.work / (f"logs-{name}" if name else "logs"),
            rasa_port=port,
        )
        if endpoints is not None:
            stack.endpoints = endpoints
        return self.keep(stack)

    def stop(self) -> None:
        for started in reversed(self._kept):
            started.stop()
        self._kept.clear()


@contextlib.contextmanager
def bench_setup() -> Iterator[BenchSetup]:
    """The model (trained if its data changed), and a Redis in a temporary directory."""
    model = ensure_model(quiet=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        setup = BenchSetup(model, work, RedisServer(work / "redis").start())
        try:
            yield setup
        finally:
            setup.stop()
