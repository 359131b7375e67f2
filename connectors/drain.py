"""Graceful drain: what a server does between SIGTERM and its exit, so a deploy loses no turn.

Sanic (21.12, as Rasa 3.6 runs it) handles SIGTERM and SIGINT by stopping its loop, running the
``before_server_stop`` listeners (the listening socket still open), closing the listener, waiting
``GRACEFUL_SHUTDOWN_TIMEOUT`` for open connections and then ``after_server_stop`` (where Rasa
closes its stores). The drain runs in ``before_server_stop``:

1. the server is marked draining: readiness answers 503 ``draining`` at once, so load balancers
   and Kubernetes send it nothing new; chat sockets opened now are closed with 1012 and message
   frames are no longer acknowledged (the client resends them after reconnecting);
2. the steps channels registered run (web chat closes each socket with 1012 once its accepted
   messages are answered), while every in-flight background task (chat turns, SMS replies due
   by REST, voice turns: :func:`omnichannel.tasks.wait_for_in_flight`) is waited for, all of it
   within ``seconds``;
3. Sanic then exits. Work still running at the bound is logged by name (and is lost with the
   process, as it would be in a crash).

Listener order matters: Sanic cancels every WebSocket handler in a ``before_server_stop``
listener of its own, registered with the first WebSocket route, and runs shutdown listeners in
reverse order of registration. So every channel that serves sockets or runs turns registers the
drain after its routes (:func:`drain_before_stop`); the first of them to run drains, the others
wait for that same drain, and all of it happens before Sanic's cancellation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable, List, Optional

from sanic import Blueprint, Sanic

from omnichannel.leases import takeover
from omnichannel.tasks import wait_for_in_flight

logger = logging.getLogger(__name__)

#: Below the deploy files' 30 s termination grace period, leaving Sanic and Rasa time to close.
DEFAULT_DRAIN_SECONDS = 20.0
#: The WebSocket close code "service restart": the client reconnects (to another replica).
CLOSE_SERVICE_RESTART = 1012

#: A channel's part of the drain, given the deadline (``time.monotonic()``) it must end by.
DrainStep = Callable[[float], Awaitable[None]]


class Drain:
    """The drain of one server (one Sanic app): its state, its steps and its bound."""

    def __init__(self) -> None:
        self.seconds = DEFAULT_DRAIN_SECONDS
        self.draining = False
        self._steps: List[DrainStep] = []
        self._done: Optional[asyncio.Future] = None

    def add_step(self, step: DrainStep) -> None:
        self._steps.append(step)

    async def run(self) -> None:
        """Drains once; a second caller waits for the same drain."""
        if self._done is None:
            self._done = asyncio.ensure_future(self._drain())
        await asyncio.shield(self._done)

    async def _drain(self) -> None:
        self.draining = True
        # Work other replicas left is theirs to take over now, not this one's.
        takeover().pause()
        started = time.monotonic()
        deadline = started + self.seconds
        logger.warning(
            "draining: taking no new work, finishing what runs (%g s at most)", self.seconds
        )
        outcomes = await asyncio.gather(
            wait_for_in_flight(deadline),
            *(step(deadline) for step in self._steps),
            return_exceptions=True,
        )
        for outcome in outcomes[1:]:
            if isinstance(outcome, BaseException):
                logger.error("drain step failed: %r", outcome, exc_info=outcome)
        left = outcomes[0] if isinstance(outcomes[0], list) else []
        for task in left:
            logger.error(
                "drain: still running at the %g s bound: %s", self.seconds, task.get_name()
            )
        logger.warning(
            "drained in %.1f s (%d task(s) left running)", time.monotonic() - started, len(left)
        )


def drain_of(app: Sanic) -> Drain:
    """The app's drain, made on first use (each channel asks for it from its own listeners)."""
    drain = getattr(app.ctx, "omni_drain", None)
    if drain is None:
        drain = app.ctx.omni_drain = Drain()
    return drain


def drain_before_stop(bp: Blueprint) -> None:
    """Registers the drain as a ``before_server_stop`` listener of ``bp``; call it after the
    blueprint's routes (see the module's note on listener order)."""

    @bp.listener("before_server_stop")
    async def drain(app: Sanic, _: Any) -> None:
        await drain_of(app).run()
