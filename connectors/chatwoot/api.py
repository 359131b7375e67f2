"""The part of Chatwoot's Application API the mirror calls (swagger/paths/application/ of
chatwoot/chatwoot; https://developers.chatwoot.com/api-reference), under
``{url}/api/v1/accounts/{account_id}`` with the header ``api_access_token`` (an agent's or
admin's access token: an agent bot's token cannot create contacts, ``BOT_ACCESSIBLE_ENDPOINTS``):

- ``POST /contacts`` (``inbox_id``, ``name``, ``identifier``, ``phone_number``,
  ``additional_attributes``) → ``{"payload": {"contact": {…, "contact_inboxes": […]},
  "contact_inbox": {"source_id": …}}}``; 422 when the ``identifier`` is taken;
- ``GET /contacts/search?q=`` → ``{"payload": [contact, …]}`` (with ``contact_inboxes``);
- ``POST /contacts/{id}/contact_inboxes`` (``inbox_id``) → ``{"source_id": …, "inbox": …}``;
- ``GET /contacts/{id}/conversations`` → ``{"payload": [conversation, …]}``;
- ``POST /conversations`` (``source_id``, ``inbox_id``, ``contact_id``, ``status``,
  ``additional_attributes``) → the conversation (``id``: its display id);
- ``POST /conversations/{id}/messages`` (``content``, ``message_type``, ``private``,
  ``source_id``: kept on the message since Chatwoot 3.3, pull 8359, ``Messages::MessageBuilder``)
  → the message; ``GET /conversations/{id}/messages[?before=<id>]`` → ``{"meta": …, "payload":
  [message, …]}``: the 20 latest (with ``id`` below ``before``), oldest first (``MessageFinder``);
- ``POST /conversations/{id}/toggle_status`` (``status``) → ``{"payload": {"current_status":
  …}}``.

Failures are typed for the mirror's retries: :class:`ChatwootUnavailable` (network, timeout,
HTTP 429 or 5xx: retried with backoff) and :class:`ChatwootRefused` (another 4xx: Chatwoot
understood and said no). Each call is counted (``omnichannel_chatwoot_requests``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, AsyncIterator, Dict, List, Mapping, Optional

import aiohttp

from omnichannel import metrics

logger = logging.getLogger(__name__)

#: Messages per page of ``GET …/messages`` (Chatwoot's MessageFinder).
MESSAGES_PAGE = 20


class ChatwootError(Exception):
    """A call to Chatwoot did not do what was asked."""

    def __init__(self, operation: str, reason: str, status: Optional[int] = None) -> None:
        super().__init__(f"Chatwoot {operation}: {reason}")
        self.operation = operation
        self.status = status


class ChatwootUnavailable(ChatwootError):
    """Chatwoot could not be reached or asked us to come back later (429, 5xx): try again."""


class ChatwootRefused(ChatwootError):
    """Chatwoot answered with a 4xx other than 429: the request itself was refused."""


class ChatwootApi:
    """One account's Application API, over one HTTP session (:meth:`session`)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        account_id: int,
        access_token: str,
    ) -> None:
        self._session = session
        self._base = f"{url.rstrip('/')}/api/v1/accounts/{account_id}"
        self._headers = {"api_access_token": access_token, "Accept": "application/json"}

    @classmethod
    @contextlib.asynccontextmanager
    async def session(
        cls, url: str, account_id: int, access_token: str, timeout_seconds: float
    ) -> AsyncIterator[ChatwootApi]:
        timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            yield cls(session, url, account_id, access_token)

    async def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        body: Optional[Mapping[str, Any]] = None,
        params: Optional[Mapping[str, Any]] = None,
    ) -> Any:
        try:
            async with self._session.request(
                method, self._base + path, json=body, params=params, headers=self._headers
            ) as answer:
                status = answer.status
                text = await answer.text()
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            metrics.chatwoot_request(operation, metrics.CHATWOOT_FAILED)
            raise ChatwootUnavailable(operation, type(error).__name__) from None
        if status == 429 or status >= 500:
            metrics.chatwoot_request(operation, metrics.CHATWOOT_FAILED)
            raise ChatwootUnavailable(operation, f"HTTP {status}", status)
        if status >= 400:
            metrics.chatwoot_request(operation, metrics.CHATWOOT_REFUSED)
            raise ChatwootRefused(operation, f"HTTP {status}: {_reason(text)}", status)
        metrics.chatwoot_request(operation, metrics.CHATWOOT_OK)
        try:
            return answer_json(text)
        except ValueError:
            raise ChatwootUnavailable(operation, f"HTTP {status} without JSON", status) from None

    # -- contacts -----------------------------------------------------------------------------

    async def create_contact(self, contact: Mapping[str, Any]) -> Dict[str, Any]:
        """The new contact (with its ``contact_inboxes``); its ``contact_inbox.source_id`` is
        copied in as ``source_id``."""
        answer = await self._call("create_contact", "POST", "/contacts", body=contact)
        payload = _mapping(_mapping(answer).get("payload"))
        created = dict(_mapping(payload.get("contact")))
        created["source_id"] = _mapping(payload.get("contact_inbox")).get("source_id")
        return created

    async def search_contacts(self, query: str) -> List[Dict[str, Any]]:
        answer = await self._call(
            "search_contacts", "GET", "/contacts/search", params={"q": query, "page": 1}
        )
        return [dict(c) for c in _mapping(answer).get("payload") or [] if isinstance(c, Mapping)]

    async def create_contact_inbox(self, contact_id: int, inbox_id: int) -> str:
        """A new session of the contact in the inbox; its ``source_id``."""
        answer = await self._call(
            "create_contact_inbox",
            "POST",
            f"/contacts/{contact_id}/contact_inboxes",
            body={"inbox_id": inbox_id},
        )
        source_id = _mapping(answer).get("source_id")
        if not isinstance(source_id, str) or not source_id:
            raise ChatwootUnavailable("create_contact_inbox", "no source_id in the answer")
        return source_id

    async def contact_conversations(self, contact_id: int) -> List[Dict[str, Any]]:
        answer = await self._call(
            "contact_conversations", "GET", f"/contacts/{contact_id}/conversations"
        )
        return [dict(c) for c in _mapping(answer).get("payload") or [] if isinstance(c, Mapping)]

    # -- conversations ------------------------------------------------------------------------

    async def create_conversation(self, conversation: Mapping[str, Any]) -> Dict[str, Any]:
        answer = await self._call(
            "create_conversation", "POST", "/conversations", body=conversation
        )
        if not isinstance(_mapping(answer).get("id"), int):
            raise ChatwootUnavailable("create_conversation", "no conversation id in the answer")
        return dict(answer)

    async def toggle_status(self, conversation_id: int, status: str) -> None:
        await self._call(
            "toggle_status",
            "POST",
            f"/conversations/{conversation_id}/toggle_status",
            body={"status": status},
        )

    # -- messages -----------------------------------------------------------------------------

    async def create_message(
        self, conversation_id: int, message: Mapping[str, Any]
    ) -> Dict[str, Any]:
        answer = await self._call(
            "create_message", "POST", f"/conversations/{conversation_id}/messages", body=message
        )
        if not isinstance(_mapping(answer).get("id"), int):
            raise ChatwootUnavailable("create_message", "no message id in the answer")
        return dict(answer)

    async def messages(
        self, conversation_id: int, before: Optional[int] = None
    ) -> List[Dict[str, Any]]:
        """A page of the conversation's messages: the latest :data:`MESSAGES_PAGE` (before the
        message ``before``), oldest first."""
        answer = await self._call(
            "list_messages",
            "GET",
            f"/conversations/{conversation_id}/messages",
            params={"before": before} if before else None,
        )
        return [dict(m) for m in _mapping(answer).get("payload") or [] if isinstance(m, Mapping)]

    async def find_message(
        self, conversation_id: int, source_id: str, after_id: int, max_pages: int = 10
    ) -> Optional[Dict[str, Any]]:
        """Our message with ``source_id``, looked for among the messages newer than ``after_id``
        (a message we know came before it), newest pages first; None when it is not there."""
        before: Optional[int] = None
        for _ in range(max_pages):
            page = await self.messages(conversation_id, before)
            for message in page:
                newer = isinstance(message.get("id"), int) and message["id"] > after_id
                if newer and message.get("source_id") == source_id:
                    return message
            ids = [m["id"] for m in page if isinstance(m.get("id"), int)]
            if len(page) < MESSAGES_PAGE or not ids or min(ids) <= after_id:
                return None
            before = min(ids)
        logger.warning(
            "Chatwoot conversation %s: message %s not found within %d pages",
            conversation_id,
            source_id,
            max_pages,
        )
        return None


def answer_json(text: str) -> Any:
    """An answer's JSON body ({} when empty); raises ValueError."""
    return json.loads(text) if text.strip() else {}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _reason(text: str) -> str:
    """Chatwoot's error message (``{"error": …}`` or ``{"message": …}``), shortened."""
    try:
        body = answer_json(text)
    except ValueError:
        body = None
    found = _mapping(body).get("message") or _mapping(body).get("error") or text
    return str(found).strip()[:200]
