"""One patch to Sanic 21.12.2, the version Rasa 3.6.21 pins: a text frame that is not UTF-8
closes the WebSocket with 1007.

RFC 6455 (section 8.1) has an endpoint that receives a text message whose bytes are not valid
UTF-8 fail the connection, and section 7.4.1 names the close code for it, 1007 (invalid frame
payload data). Sanic decodes text frames in its frame assembler, inside a task of its own: the
``UnicodeDecodeError`` ends that task, is logged as an unretrieved exception, and the frame is
dropped while the socket stays open, so the client never learns why its message vanished.
:func:`install` wraps the method that feeds frames to the assembler: on a decode error it fails
the connection with 1007 as the RFC asks, through Sanic's own ``fail_connection``.

The patch replaces a method of Sanic's class, so it is tied to the version it was read from:
:func:`install` refuses any other Sanic version rather than patch code it has not seen. The
server's HTTP edge (:func:`connectors.http_limits.install`) installs it.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import sanic
from sanic.server.websockets.impl import WebsocketImplProtocol

logger = logging.getLogger(__name__)

#: The Sanic version whose code this patch (and connectors/http_limits.py) was written against.
SANIC_VERSION = "21.12.2"
#: RFC 6455 7.4.1: data within a message not consistent with its type (non-UTF-8 text).
CLOSE_INVALID_PAYLOAD = 1007

_original_process_events = WebsocketImplProtocol.process_events


async def _process_events(self: WebsocketImplProtocol, events: Sequence[Any]) -> None:
    try:
        await _original_process_events(self, events)
    except UnicodeDecodeError:
        logger.info("closing a WebSocket with 1007: a text frame is not UTF-8")
        self.fail_connection(CLOSE_INVALID_PAYLOAD, "text frame is not valid UTF-8")


def check_version() -> None:
    """RuntimeError unless the installed Sanic is the one these patches were read from."""
    if sanic.__version__ != SANIC_VERSION:
        raise RuntimeError(
            f"connectors/sanic_patches.py and connectors/http_limits.py target Sanic "
            f"{SANIC_VERSION}, found {sanic.__version__}: re-read the patched and used internals"
        )


def install() -> None:
    """Applies the patch (idempotent); raises RuntimeError on another Sanic version."""
    check_version()
    WebsocketImplProtocol.process_events = _process_events  # type: ignore[method-assign]
