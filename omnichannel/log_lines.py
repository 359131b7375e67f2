"""What every log line of a server process goes through: redaction, and the ids of its trace.

:func:`install` wraps the process's log record factory, so it applies to every logger (Rasa's,
Sanic's, the SDKs', ours) whatever handlers and formatters the process configured. Each record's
message is formatted once, redacted (:mod:`omnichannel.redaction`: card numbers, emails, the
business's patterns) and, inside a span, ends with ``trace_id=… span_id=…`` so a log line leads
to its trace; the ids are also on the record (``record.trace_id``, ``record.span_id``) for a
formatter that places them itself.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from omnichannel import tracing
from omnichannel.redaction import redact

_lock = threading.Lock()
_installed = False


def _wrap(factory: Any) -> Any:
    def record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made: logging.LogRecord = factory(*args, **kwargs)
        try:
            message = made.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call must still be logged as it was
            return made
        message = redact(message)
        ids = tracing.current_ids()
        if ids is not None:
            made.trace_id, made.span_id = ids
            message = f"{message} trace_id={ids[0]} span_id={ids[1]}"
        else:
            made.trace_id = made.span_id = ""
        made.msg, made.args = message, None
        return made

    return record


def install() -> None:
    """Redact and tag every log record this process makes from now on (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        logging.setLogRecordFactory(_wrap(logging.getLogRecordFactory()))
        _installed = True
