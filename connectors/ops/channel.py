"""The Rasa input channel ``ops``: probes' routes, and the process's metrics exporter.

Routes (under ``/webhooks/ops``), unauthenticated as probes need them, revealing no more than
ok/failed per check:

- ``GET /livez``: 200 while the process serves HTTP (a liveness probe restarts it otherwise).
- ``GET /readyz``: whether this replica can answer: 200 ``{"status": "ready", "checks":
  {...}}`` when its model is loaded and it reaches Redis, else 503 with the failed check(s) (a
  readiness probe or load balancer then sends it no traffic). The action server is checked and
  reported too (``"status": "degraded"`` when it fails) but does not decide: it is shared by
  every replica, and a replica without it still answers each channel with its apology, where
  a fleet taken out of the balancer would answer nothing. See :mod:`connectors.ops.checks`.
  While the server drains (after SIGTERM, see :mod:`connectors.drain`) it is 503
  ``{"status": "draining"}`` at once, whatever the checks say.

Every log line of the process is redacted and carries its trace's ids
(:mod:`omnichannel.log_lines`), and with OpenTelemetry's variables set the process exports
traces (:mod:`omnichannel.tracing`, :mod:`connectors.rasa_tracing`).

With ``METRICS_PORT`` set, the process serves Prometheus's ``/metrics`` on that port, apart
from the public one, bound to ``METRICS_ADDRESS`` (loopback unless set, so only the host can
scrape it; see ``omnichannel/metrics.py``).
"""

from __future__ import annotations

import os
from typing import Any, Awaitable, Callable, Dict, Optional

from pydantic import Field
from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Sanic, response
from sanic.request import Request

from connectors import rasa_tracing
from connectors.drain import DEFAULT_DRAIN_SECONDS, drain_before_stop, drain_of
from connectors.http_limits import ChannelBlueprint
from connectors.ops.checks import Readiness
from connectors.ops.heap import freeze_when_loaded
from omnichannel import log_lines, metrics, tracing
from omnichannel.options import ConnectorOptions
from omnichannel.settings import Settings, load_settings

SECTION = "connectors.ops.channel.OpsInput"
#: The Rasa server's service name in traces unless OTEL_SERVICE_NAME names it.
SERVICE_NAME = "rasa-omnichannel"
NO_STORE = {"Cache-Control": "no-store"}


class OpsOptions(ConnectorOptions):
    """Tunables from credentials.yml."""

    #: Seconds each readiness check (Redis PING, action server /health) may take.
    check_timeout: float = Field(default=1.0, gt=0, le=10)
    #: Seconds a readiness verdict is reused, so frequent probes do not hammer the dependencies.
    cache_seconds: float = Field(default=2.0, ge=0, le=60)
    #: Longest a SIGTERM'd server spends finishing accepted work before it exits; keep it below
    #: the orchestrator's grace period (30 s in deploy/) so the process is not killed mid-drain.
    drain_seconds: float = Field(default=DEFAULT_DRAIN_SECONDS, ge=0, le=600)


class OpsInput(InputChannel):
    """Rasa input channel ``ops``; credentials.yml: ``connectors.ops.channel.OpsInput``
    (its options: :class:`OpsOptions`)."""

    def __init__(self, settings: Settings, options: OpsOptions) -> None:
        #: Checked here so a bad METRICS_PORT stops start-up with its name.
        self.metrics_port = metrics.metrics_port()
        self.metrics_address = metrics.metrics_address()
        self.app: Optional[Sanic] = None
        self.drain_seconds = options.drain_seconds
        self.readiness = Readiness(
            settings.redis_url,
            self._action_server_url,
            model_loaded=self._model_loaded,
            timeout=options.check_timeout,
            cache_seconds=options.cache_seconds,
        )

    @classmethod
    def name(cls) -> str:
        return "ops"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> OpsInput:
        given = {key: value for key, value in (credentials or {}).items() if value is not None}
        return cls(load_settings(), OpsOptions.parse(SECTION, given))

    def _agent(self) -> Any:
        return getattr(self.app.ctx, "agent", None) if self.app is not None else None

    def _action_server_url(self) -> Optional[str]:
        """endpoints.yml's action_endpoint as Rasa loaded it, else ACTION_SERVER_URL."""
        endpoint = getattr(self._agent(), "action_endpoint", None)
        return getattr(endpoint, "url", None) or os.environ.get("ACTION_SERVER_URL")

    def _model_loaded(self) -> bool:
        agent = self._agent()
        return agent is not None and agent.is_ready()

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> ChannelBlueprint:
        bp = ChannelBlueprint("omni_ops", __name__)

        @bp.listener("before_server_start")
        async def start(app: Sanic, _: Any) -> None:
            self.app = app
            drain_of(app).seconds = self.drain_seconds
            if self.metrics_port is not None:
                metrics.serve(self.metrics_port, self.metrics_address)
            log_lines.install()
            if tracing.configure(SERVICE_NAME):
                rasa_tracing.install()

        @bp.listener("after_server_start")
        async def freeze_heap(app: Sanic, _: Any) -> None:
            app.add_task(freeze_when_loaded(self._model_loaded), name="omni_ops.freeze_heap")

        @bp.route("/livez", methods=["GET"])
        async def livez(_: Request) -> Any:
            return response.json({"status": "alive"}, headers=NO_STORE)

        @bp.route("/readyz", methods=["GET"])
        async def readyz(request: Request) -> Any:
            if drain_of(request.app).draining:
                return response.json({"status": "draining"}, status=503, headers=NO_STORE)
            report = await self.readiness.report()
            return response.json(
                report.as_json(), status=200 if report.ready else 503, headers=NO_STORE
            )

        drain_before_stop(bp)

        @bp.listener("after_server_stop")
        async def flush_traces(*_: Any) -> None:
            tracing.shutdown()

        return bp
