"""Readiness: whether this process can answer now, asked by every probe.

A replica answers once its model is loaded and it reaches Redis (where every accepted message
is recorded before it is acknowledged); those checks decide (:data:`DECIDING`). The action
server is checked too and reported, but does not decide: it is one service behind every
replica, so its outage would take the whole fleet out of the load balancer and the Kubernetes
Service at once, and Twilio and VAPI would get 503s or silence where each replica still gives
the channel's apology. It shows as ``"status": "degraded"``, in the log, and in the
``omnichannel_dependency_up`` metric. Checks are real (a PING, a ``GET /health``), each bounded
by a short timeout so a probe answers within its own deadline even when a dependency hangs.
Probes arrive every few seconds from several places (each load balancer node, the kubelet), so
the verdict is cached for a couple of seconds and concurrent probes share one round of checks.

The report names each check and says ``ok`` or ``failed``, nothing more: the routes need no
auth (probes carry no secrets), so they must not reveal addresses or error texts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable, Dict, Optional
from urllib.parse import urlsplit

import aiohttp

from omnichannel import metrics
from omnichannel.redis_client import REDIS_FAILURES, redis_client, redis_config

logger = logging.getLogger(__name__)

REDIS = "redis"
ACTION_SERVER = "action_server"
MODEL = "model"
OK = "ok"
FAILED = "failed"
#: The checks whose failure means this replica cannot answer.
DECIDING = frozenset({REDIS, MODEL})


@dataclass(frozen=True)
class Report:
    """Each check's verdict, by name."""

    checks: Dict[str, bool]

    @property
    def ready(self) -> bool:
        return all(passed for name, passed in self.checks.items() if name in DECIDING)

    @property
    def status(self) -> str:
        if not self.ready:
            return "not ready"
        return "ready" if all(self.checks.values()) else "degraded"

    def as_json(self) -> Dict[str, object]:
        return {
            "status": self.status,
            "checks": {name: OK if passed else FAILED for name, passed in self.checks.items()},
        }


def health_url(action_endpoint_url: str) -> str:
    """The action server's health route: rasa_sdk serves ``/health`` next to ``/webhook``."""
    parts = urlsplit(action_endpoint_url)
    return f"{parts.scheme}://{parts.netloc}/health"


async def redis_answers(redis_url: Optional[str], timeout: float) -> bool:
    """Redis answers PING within ``timeout``.

    The client's failover retries are off (a probe wants now, not eventually, and its failures
    must not count as the turns' Redis retries); one immediate second PING, on a new connection,
    covers a pooled connection that went stale while Redis restarted between probes.
    """

    async def ping() -> bool:
        client = redis_client(redis_config(redis_url).replace(retry_seconds=0))
        try:
            return bool(await client.ping())
        except REDIS_FAILURES:
            return bool(await client.ping())

    try:
        return await asyncio.wait_for(ping(), timeout)
    except Exception as error:  # noqa: BLE001 - any failure means "not ready"
        logger.warning("readiness: Redis check failed: %s", type(error).__name__)
        return False


async def action_server_answers(url: Optional[str], timeout: float) -> bool:
    """The action server at ``url`` (its webhook URL) answers ``/health`` with a 200."""
    if not url:
        logger.warning("readiness: no action server URL configured")
        return False
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.get(health_url(url)) as answer:
                return answer.status == 200
    except Exception as error:  # noqa: BLE001 - any failure means "not ready"
        logger.warning("readiness: action server check failed: %s", type(error).__name__)
        return False


class Readiness:
    """The cached readiness of one process.

    ``action_server_url`` is called at each round (Rasa knows the endpoint only once it has
    loaded), ``model_loaded`` too; ``redis_url`` None means ``REDIS_URL``.
    """

    def __init__(
        self,
        redis_url: Optional[str],
        action_server_url: Callable[[], Optional[str]],
        *,
        model_loaded: Optional[Callable[[], bool]] = None,
        timeout: float = 1.0,
        cache_seconds: float = 2.0,
    ) -> None:
        self.redis_url = redis_url
        self.action_server_url = action_server_url
        self.model_loaded = model_loaded
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._report: Optional[Report] = None
        self._checked_at = 0.0
        self._round: Optional[asyncio.Future] = None

    async def report(self) -> Report:
        """The latest verdict, checked again when older than ``cache_seconds``."""
        if self._report is not None and time.monotonic() - self._checked_at < self.cache_seconds:
            return self._report
        if self._round is None or self._round.done():
            self._round = asyncio.ensure_future(self._check())
        return await asyncio.shield(self._round)

    async def _check(self) -> Report:
        redis_ok, action_server_ok = await asyncio.gather(
            redis_answers(self.redis_url, self.timeout),
            action_server_answers(self.action_server_url(), self.timeout),
        )
        verdicts = {REDIS: redis_ok, ACTION_SERVER: action_server_ok}
        for name, passed in verdicts.items():
            metrics.DEPENDENCY_UP.labels(dependency=name).set(1 if passed else 0)
        if self.model_loaded is not None:
            verdicts[MODEL] = self.model_loaded()
        self._report = Report(verdicts)
        self._checked_at = time.monotonic()
        return self._report
