"""What the action server process adds around rasa-sdk's: redacted log lines with trace ids,
and a span for each action Rasa asks for, inside the trace of the Rasa turn that asked.

rasa-sdk builds its Sanic app (named ``rasa_sdk``) and then imports this package, so
:func:`install`, run on import, finds the app and adds request/response middleware: the span
``action_server.run`` is the child of the ``traceparent`` Rasa sent (connectors/rasa_tracing.py),
and everything an action does (the LLM call) nests inside it. Outside the action server (unit
tests importing an action) there is no such app and nothing is installed.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Optional

from omnichannel import log_lines, tracing

logger = logging.getLogger(__name__)

#: The action server's service name in traces unless OTEL_SERVICE_NAME names it.
SERVICE_NAME = "rasa-omnichannel-actions"
#: rasa-sdk's Sanic app name (rasa_sdk/endpoint.py).
APP_NAME = "rasa_sdk"


#: Rasa's action call starts with the action's name; the rest (the tracker and the whole domain,
#: tens of kilobytes) is rasa-sdk's to parse, not ours a second time.
_NEXT_ACTION = re.compile(rb'"next_action"\s*:\s*"([A-Za-z0-9_.-]{1,80})"')


def _action_name(body: bytes) -> Optional[str]:
    found = _NEXT_ACTION.search(body or b"", 0, 512)
    return found.group(1).decode("ascii") if found else None


def install() -> bool:
    """Adds the middleware to rasa-sdk's app when it exists; True when installed."""
    from sanic import Sanic
    from sanic.exceptions import SanicException

    try:
        app = Sanic.get_app(APP_NAME)
    except SanicException:
        return False
    if getattr(app.ctx, "omni_actions_observed", False):
        return True
    app.ctx.omni_actions_observed = True
    log_lines.install()
    if not tracing.configure(SERVICE_NAME):
        return True

    @app.middleware("request")
    async def start_span(request: Any) -> None:
        if request.method == "POST" and request.path == "/webhook":
            request.ctx.omni_trace = tracing.request_span(
                "action_server.run",
                parent=tracing.extract(dict(request.headers)),
                attributes={"rasa.action": _action_name(request.body)},
            )

    @app.middleware("response")
    async def end_span(request: Any, response: Any) -> None:
        trace = getattr(request.ctx, "omni_trace", None)
        if trace is not None:
            request.ctx.omni_trace = None
            trace.end(getattr(response, "status", None))

    async def flush(*_: Any) -> None:
        tracing.shutdown()

    app.register_listener(flush, "after_server_stop")

    return True
