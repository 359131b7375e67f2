"""The Rasa input channel ``insight``: the insight page and its JSON, CSV and training-file API.

Routes (under ``/webhooks/insight``), for the admin identity (``Authorization: Bearer
<RASA_AUTH_TOKEN>``, as the conversation viewer), each answer audit-logged:

- ``GET /``: the page; ``GET /static/<file>``: its script, stylesheet and the vendored Chart.js
  (no data, served to anyone, nothing loaded from elsewhere);
- ``GET /api/report?from=YYYY-MM-DD&to=YYYY-MM-DD&channel=all|<a channel kind>``: the period's
  figures (:meth:`omnichannel.insight.store.InsightStore.report`), read from the day aggregates,
  never from event logs;
- ``GET /api/report.csv``: the same as CSV; ``GET /api/training.yml``: the not-understood
  messages as NLU training data for ``data/``;
- ``GET /api/audit?day=YYYY-MM-DD``: that day's audit entries (who looked at what).

401 without the token, 400 on a bad period, 503 when Redis fails. The channel takes no messages.
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, Optional

from pydantic import Field
from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.admin_auth import ADMIN, is_authorised
from connectors.event_log.reading import event_log_of
from connectors.forwarded import client_address
from connectors.http_limits import ChannelBlueprint
from connectors.insight.wire import BadPeriod, parse_period, report_csv, training_examples
from connectors.static_pages import add_page_routes
from omnichannel import audit
from omnichannel.insight.recorder import retention_days
from omnichannel.insight.store import InsightStore
from omnichannel.options import ConnectorOptions
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable, redis_client
from omnichannel.settings import Settings, load_settings

logger = logging.getLogger(__name__)

SECTION = "connectors.insight.channel.InsightInput"
NO_STORE = {"Cache-Control": "no-store"}
STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {
    "insight.js": "application/javascript; charset=utf-8",
    "insight.css": "text/css; charset=utf-8",
    "chart.umd.min.js": "application/javascript; charset=utf-8",
}
#: Nothing from elsewhere, no inline script or style.
PAGE_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def store_namespace(agent: Any) -> str:
    """The tracker store's ``key_prefix`` (the figures are kept under it), "" without one."""
    namespace = getattr(event_log_of(agent, "the insight page"), "namespace", "")
    return namespace if isinstance(namespace, str) else ""


class InsightOptions(ConnectorOptions):
    """Tunables from credentials.yml."""

    #: Not-understood messages listed (and exported) per report.
    top_not_understood: int = Field(default=20, ge=1, le=100)


class InsightInput(InputChannel):
    """Rasa input channel ``insight``; credentials.yml: ``connectors.insight.channel.InsightInput``
    (its options: :class:`InsightOptions`)."""

    def __init__(self, settings: Settings, options: InsightOptions) -> None:
        settings.require("RASA_AUTH_TOKEN")
        self.auth_token = settings.rasa_auth_token or ""
        self.options = options
        #: Checked here so a bad INSIGHT_RETENTION_DAYS stops start-up with its name.
        self.retention_days = retention_days()

    @classmethod
    def name(cls) -> str:
        return "insight"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> InsightInput:
        given = {key: value for key, value in (credentials or {}).items() if value is not None}
        return cls(load_settings(), InsightOptions.parse(SECTION, given))

    def _unauthorised(self, request: Request) -> Optional[HTTPResponse]:
        if is_authorised(request.headers.get("authorization"), self.auth_token):
            return None
        return response.json(
            {"error": "send the Rasa auth token as a Bearer token"},
            status=401,
            headers={**NO_STORE, "WWW-Authenticate": "Bearer"},
        )

    async def _report(self, request: Request, what: str) -> Any:
        """The period's report, audited; or the refusal to answer instead."""
        refusal = self._unauthorised(request)
        if refusal is not None:
            return None, refusal
        try:
            today = datetime.datetime.now(datetime.timezone.utc).date()
            period = parse_period(request.args, today)
            store = InsightStore(
                redis_client(), self.retention_days, store_namespace(request.app.ctx.agent)
            )
            report = await store.report(
                period.days, period.channels, top=self.options.top_not_understood
            )
        except BadPeriod as error:
            return None, response.json({"error": str(error)}, status=400, headers=NO_STORE)
        except (StateUnavailable, *REDIS_FAILURES) as error:
            logger.error("insight: figures unread: %s", type(error).__name__)
            return None, response.json(
                {"error": "try again later"}, status=503, headers=NO_STORE
            )
        report["channel"] = period.channel
        await audit.record(redis_client(), ADMIN, what, None, client_address(request))
        return report, None

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> ChannelBlueprint:
        bp = ChannelBlueprint("omni_insight", __name__)

        add_page_routes(bp, STATIC_DIR, STATIC_FILES, PAGE_SECURITY_POLICY)

        @bp.route("/api/report", methods=["GET"])
        async def report(request: Request) -> Any:
            found, refusal = await self._report(request, "insight.report")
            return refusal or response.json(found, headers=NO_STORE)

        @bp.route("/api/report.csv", methods=["GET"])
        async def report_as_csv(request: Request) -> Any:
            found, refusal = await self._report(request, "insight.csv")
            if refusal is not None:
                return refusal
            name = f"insight-{found['days'][0]}-{found['days'][-1]}-{found['channel']}.csv"
            return response.text(
                report_csv(found),
                content_type="text/csv; charset=utf-8",
                headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{name}"'},
            )

        @bp.route("/api/training.yml", methods=["GET"])
        async def training(request: Request) -> Any:
            found, refusal = await self._report(request, "insight.training")
            if refusal is not None:
                return refusal
            first, last = found["days"][0], found["days"][-1]
            name = f"nlu_not_understood_{first}_{last}.yml"
            return response.text(
                training_examples(found["not_understood"], first, last),
                content_type="text/yaml; charset=utf-8",
                headers={**NO_STORE, "Content-Disposition": f'attachment; filename="{name}"'},
            )

        @bp.route("/api/audit", methods=["GET"])
        async def audit_log(request: Request) -> Any:
            refusal = self._unauthorised(request)
            if refusal is not None:
                return refusal
            day = str(request.args.get("day") or "")
            try:
                datetime.date.fromisoformat(day)
            except ValueError:
                return response.json(
                    {"error": "day must be YYYY-MM-DD"}, status=400, headers=NO_STORE
                )
            try:
                entries = await audit.read(redis_client(), day)
            except REDIS_FAILURES:
                return response.json({"error": "try again later"}, status=503, headers=NO_STORE)
            await audit.record(redis_client(), ADMIN, "audit.read", None, client_address(request))
            return response.json({"day": day, "entries": entries}, headers=NO_STORE)

        return bp
