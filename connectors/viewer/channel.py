"""The Rasa input channel ``viewer``: the conversation viewer's page and its JSON API.

Routes (under ``/webhooks/viewer``):

- ``GET /``: the page (a login form, then search and timeline); ``GET /static/<file>``: its
  script and stylesheet. They hold no data, so they are served to anyone.
- ``POST /api/timeline``: ``Authorization: Bearer <RASA_AUTH_TOKEN>``; a JSON body naming one
  of ``phone``, ``user_id``, ``conversation_id``, and optionally ``before`` (a log index) and
  ``limit`` (events). Answers the conversation's profile and timeline page (see
  :mod:`connectors.viewer.lookup`); 401 without the token, 400 on bad input, 404 when nothing
  matches, 413 on a body over 4 KiB, 503 when Redis fails. Each answer is audit-logged (who,
  which conversation: :mod:`omnichannel.audit`).
- ``POST /api/erase``: the same token; ``{"conversation_id": …}``. Forgets that customer
  everywhere (:mod:`omnichannel.erasure`, under the conversation's lock) and answers the receipt
  (``erased: false`` when nothing was left: calling it again is harmless).
- ``POST /api/outbound``: the same Bearer token; a JSON body ``{"status"?, "limit"?}``. Answers
  the recent notifications and callbacks of every conversation (scheduled, queued, sent,
  refused… with the reason and the due time), newest change first, and the latest refusals
  that named no known customer.
- ``POST /api/media``: the same Bearer token; a JSON body ``{"conversation_id", "index" (a
  user event's log index), "item" (its media's position)}``. Answers the picture or file the
  customer sent: a web chat upload from the conversation's own uploads, WhatsApp or MMS media
  fetched from Twilio (its media of our account only, bounded, with a timeout:
  omnichannel/media.py), served only when its bytes are the type it claims, with that type,
  ``nosniff``, a sandbox CSP, and anything but a picture as a download.

The channel takes no messages: it reads what the other channels stored.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Optional

from pydantic import Field
from rasa.core.channels.channel import InputChannel, UserMessage
from rasa.core.lock_store import LockError
from sanic import response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.admin_auth import ADMIN, is_authorised
from connectors.erasure import erase_conversation
from connectors.event_log.reading import event_log_of
from connectors.forwarded import client_address
from connectors.http_limits import ChannelBlueprint, bounded_body
from connectors.static_pages import add_page_routes
from connectors.viewer.lookup import NotFound, recent_outbound, timeline_page
from connectors.viewer.wire import (
    BadQuery,
    parse_erasure,
    parse_media_query,
    parse_outbound_query,
    parse_query,
)
from omnichannel import audit
from omnichannel.errors import ConfigError
from omnichannel.identity import IdentityStore
from omnichannel.media import MediaRefused, content_matches, fetch_twilio_media, sniff_type
from omnichannel.options import ConnectorOptions
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable, redis_client
from omnichannel.settings import Settings, load_settings
from omnichannel.uploads import UploadStore, safe_headers

if TYPE_CHECKING:
    from rasa.core.agent import Agent

logger = logging.getLogger(__name__)

SECTION = "connectors.viewer.channel.ViewerInput"
#: A query is a few short fields.
QUERY_MAX_BYTES = 4096
NO_STORE = {"Cache-Control": "no-store"}
STATIC_DIR = Path(__file__).parent / "static"
STATIC_FILES = {
    "viewer.js": "application/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
}
#: Nothing from elsewhere, no inline script; bot images are shown as links, not loaded; a
#: customer's media is read through the API and shown from a blob.
PAGE_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class ViewerOptions(ConnectorOptions):
    """Tunables from credentials.yml."""

    #: Events read for a timeline page when the request names no ``limit``.
    page_events: int = Field(default=200, ge=1, le=5000)
    #: The largest ``limit`` a request may ask for.
    max_page_events: int = Field(default=1000, ge=1, le=5000)


def event_store(agent: Agent) -> Any:
    """The event-log store the viewer reads pages of."""
    return event_log_of(agent, "the conversation viewer")


class ViewerInput(InputChannel):
    """Rasa input channel ``viewer``; credentials.yml: ``connectors.viewer.channel.ViewerInput``
    (its options: :class:`ViewerOptions`)."""

    def __init__(self, settings: Settings, options: ViewerOptions) -> None:
        settings.require("RASA_AUTH_TOKEN")
        if options.page_events > options.max_page_events:
            raise ConfigError(f"{SECTION}: page_events must not exceed max_page_events")
        self.auth_token = settings.rasa_auth_token or ""
        self.options = options
        self.identity = IdentityStore()
        self.settings = settings

    @classmethod
    def name(cls) -> str:
        return "viewer"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> ViewerInput:
        given = {key: value for key, value in (credentials or {}).items() if value is not None}
        return cls(load_settings(), ViewerOptions.parse(SECTION, given))

    def _unauthorised(self, request: Request) -> Optional[HTTPResponse]:
        """A request without the token, refused (before its body is read)."""
        if is_authorised(request.headers.get("authorization"), self.auth_token):
            return None
        return response.json(
            {"error": "send the Rasa auth token as a Bearer token"},
            status=401,
            headers={**NO_STORE, "WWW-Authenticate": "Bearer"},
        )

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> ChannelBlueprint:
        bp = ChannelBlueprint("omni_viewer", __name__)

        add_page_routes(bp, STATIC_DIR, STATIC_FILES, PAGE_SECURITY_POLICY)

        @bp.route("/api/timeline", methods=["POST"])
        @bounded_body(QUERY_MAX_BYTES, admit=self._unauthorised)
        async def timeline(request: Request) -> Any:
            refusal = self._unauthorised(request)
            if refusal is not None:
                return refusal
            try:
                query = parse_query(
                    request.body or b"",
                    page_events=self.options.page_events,
                    max_page_events=self.options.max_page_events,
                )
                answer = await timeline_page(
                    self.identity, event_store(request.app.ctx.agent), query
                )
            except BadQuery as error:
                return response.json({"error": str(error)}, status=400, headers=NO_STORE)
            except NotFound as error:
                return response.json({"error": str(error)}, status=404, headers=NO_STORE)
            except StateUnavailable as error:
                logger.error("viewer: %s", error)
                return response.json({"error": "try again later"}, status=503, headers=NO_STORE)
            await audit.record(
                redis_client(),
                ADMIN,
                "viewer.timeline",
                answer["conversation_id"],
                client_address(request),
            )
            return response.json(answer, headers=NO_STORE)

        @bp.route("/api/erase", methods=["POST"])
        @bounded_body(QUERY_MAX_BYTES, admit=self._unauthorised)
        async def erase(request: Request) -> Any:
            """Forgets one conversation's customer everywhere; answers the receipt. The same
            call again answers a receipt with ``erased: false`` (nothing was left)."""
            refusal = self._unauthorised(request)
            if refusal is not None:
                return refusal
            try:
                conversation_id = parse_erasure(request.body or b"")
                receipt = await erase_conversation(
                    request.app.ctx.agent,
                    redis_client(),
                    conversation_id,
                    client_address(request),
                )
            except BadQuery as error:
                return response.json({"error": str(error)}, status=400, headers=NO_STORE)
            except (StateUnavailable, LockError, *REDIS_FAILURES) as error:
                logger.error("viewer: erasure failed: %s", type(error).__name__)
                return response.json({"error": "try again later"}, status=503, headers=NO_STORE)
            logger.info("erasure %s done", receipt.receipt_id)
            return response.json(receipt.as_dict(), headers=NO_STORE)

        @bp.route("/api/outbound", methods=["POST"])
        @bounded_body(QUERY_MAX_BYTES, admit=self._unauthorised)
        async def outbound(request: Request) -> Any:
            """The recent notifications and callbacks of every conversation, by status."""
            refusal = self._unauthorised(request)
            if refusal is not None:
                return refusal
            try:
                status, limit = parse_outbound_query(request.body or b"")
                answer = await recent_outbound(status, limit)
            except BadQuery as error:
                return response.json({"error": str(error)}, status=400, headers=NO_STORE)
            except StateUnavailable as error:
                logger.error("viewer: %s", error)
                return response.json({"error": "try again later"}, status=503, headers=NO_STORE)
            return response.json(answer, headers=NO_STORE)

        @bp.route("/api/media", methods=["POST"])
        @bounded_body(QUERY_MAX_BYTES, admit=self._unauthorised)
        async def media(request: Request) -> Any:
            refusal = self._unauthorised(request)
            if refusal is not None:
                return refusal
            try:
                wanted = parse_media_query(request.body or b"")
                item = await media_item(event_store(request.app.ctx.agent), *wanted)
                data, claimed, name = await self._media_bytes(wanted[0], item)
                await audit.record(
                    redis_client(), ADMIN, "viewer.media", wanted[0], client_address(request)
                )
            except BadQuery as error:
                return response.json({"error": str(error)}, status=400, headers=NO_STORE)
            except NotFound as error:
                return response.json({"error": str(error)}, status=404, headers=NO_STORE)
            except MediaRefused as refused:
                status = 413 if refused.reason == "too_large" else 502
                return response.json({"error": str(refused)}, status=status, headers=NO_STORE)
            except (StateUnavailable, *REDIS_FAILURES) as error:
                logger.error("viewer: media unreadable: %s", type(error).__name__)
                return response.json({"error": "try again later"}, status=503, headers=NO_STORE)
            sniffed = sniff_type(data)
            if not sniffed or not content_matches(claimed, data):
                return response.json(
                    {"error": "the file is not the type it claims; not shown"},
                    status=415,
                    headers=NO_STORE,
                )
            return response.raw(data, headers={**safe_headers(sniffed, name), **NO_STORE})

        return bp

    async def _media_bytes(self, conversation_id: str, item: Dict[str, Any]) -> Any:
        """``(bytes, claimed type, name)`` of a customer's media item."""
        if item.get("refused"):
            raise NotFound("that file is of a type we do not take: it was never kept")
        if item.get("source") == "upload":
            upload = await UploadStore(self.identity.redis).get(
                conversation_id, str(item.get("upload_id") or "")
            )
            if upload is None:
                raise NotFound("that upload has expired")
            return upload.data, upload.content_type, upload.name
        fetched = await fetch_twilio_media(
            str(item.get("url") or ""), self.settings, max_bytes=MEDIA_MAX_BYTES, timeout=15.0
        )
        claimed = fetched.content_type or str(item.get("content_type") or "")
        return fetched.data, claimed, f"media.{claimed.rsplit('/', 1)[-1]}"


#: The largest customer media the viewer shows (WhatsApp's own limit for a file).
MEDIA_MAX_BYTES = 16 * 1024 * 1024


async def media_item(store: Any, conversation_id: str, index: int, item: int) -> Dict[str, Any]:
    """The ``item``-th media of the user event at log ``index``. Raises NotFound."""
    events = await store.read_events(conversation_id, index, index)
    event = events[0] if events else {}
    media = (event.get("metadata") or {}).get("media") if event.get("event") == "user" else None
    if not isinstance(media, list) or not 0 <= item < len(media):
        raise NotFound("no such media in that conversation")
    found = media[item]
    if not isinstance(found, dict):
        raise NotFound("no such media in that conversation")
    return found
