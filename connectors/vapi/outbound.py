"""VAPI's REST API for calls we place: ``POST /call`` to dial a customer, ``GET /call`` to find a
call whose creation we may not have seen answered.

The request (VAPI's ``CreateCallDTO``; docs/specs/vapi-outbound-and-transfer.md): the saved
assistant (``assistantId``) or, without one, the transient custom-LLM assistant
``assistant-request`` answers with; ``phoneNumberId``, the imported number the call goes out
from; ``customer.number``, E.164; and ``assistantOverrides`` with the call's first words
(``firstMessage``), the server messages we need and our ``metadata``. ``metadata`` rides in
``assistantOverrides`` because CreateCallDTO has no top-level field for it, and an assistant's
metadata is what a custom LLM with ``metadataSendMode: variable`` receives as ``metadata``
(VAPI's OpenAPI schemas AssistantOverrides.metadata and CustomLLMModel.metadataSendMode, as
generated in github.com/Eric-D-Stevens/VapiPythonClient docs/AssistantOverrides.md and
docs/CustomLLMModel.md).

``POST /call`` takes no idempotency key, so a request whose answer was lost (a timeout, a
dropped connection, a replica killed while it waited) may or may not have made a call. The
caller reconciles with :meth:`VapiApi.find_call` (``GET /call?createdAtGt=…``, the calls'
``assistantOverrides.metadata``) before dialling again, as the SMS sender does with Twilio.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

import aiohttp

from connectors.vapi.wire import SUBSCRIBED, custom_llm_assistant
from omnichannel.masking import mask

logger = logging.getLogger(__name__)

VAPI_API_BASE_URL = "https://api.vapi.ai"
#: One REST request, at most (VAPI answers POST /call once the call is queued).
REQUEST_TIMEOUT_SECONDS = 10.0
#: Calls one reconcile reads (newest first); a callback's call is among the newest.
RECONCILE_LIMIT = 100
#: The metadata key naming the callback a call was placed for.
CALLBACK_KEY = "callback_id"
#: The metadata key naming the conversation the call's turns belong to.
CONVERSATION_KEY = "conversation_id"


class VapiApiError(Exception):
    """VAPI refused or did not answer. ``retryable``: worth trying again later (a 5xx, 429, a
    timeout, a refused connection); else the request itself is wrong (a 4xx: bad number,
    unknown phone number id, a key without rights), and trying again would fail the same way.
    ``outcome_unknown``: the request may have reached VAPI (reconcile before retrying)."""

    def __init__(
        self, reason: str, *, status: Optional[int], retryable: bool, outcome_unknown: bool
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.retryable = retryable
        self.outcome_unknown = outcome_unknown


@dataclass(frozen=True)
class OutboundCall:
    """One call to place."""

    phone_number_id: str
    customer_number: str
    first_message: str
    metadata: Dict[str, str]
    #: The saved assistant; None: the transient custom-LLM assistant below.
    assistant_id: Optional[str] = None
    public_base_url: str = ""
    assistant_name: str = ""
    #: For the org's own reference in VAPI's dashboard (at most 40 characters).
    name: str = ""

    def body(self) -> Dict[str, Any]:
        """The CreateCallDTO."""
        overrides: Dict[str, Any] = {
            "firstMessage": self.first_message,
            "firstMessageMode": "assistant-speaks-first",
            "serverMessages": list(SUBSCRIBED),
            "metadata": dict(self.metadata),
        }
        body: Dict[str, Any] = {
            "phoneNumberId": self.phone_number_id,
            "customer": {"number": self.customer_number},
            "assistantOverrides": overrides,
        }
        if self.name:
            body["name"] = self.name[:40]
        if self.assistant_id:
            body["assistantId"] = self.assistant_id
        else:
            body["assistant"] = custom_llm_assistant(
                self.public_base_url, self.assistant_name, self.first_message
            )
        return body


@dataclass(frozen=True)
class PlacedCall:
    """VAPI's answer: the call's id and status (``queued`` or ``scheduled``)."""

    call_id: str
    status: str
    raw: Dict[str, Any] = field(default_factory=dict, repr=False)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds")


def _error_kind(error: BaseException) -> str:
    reason = getattr(error, "os_error", None)
    return f"{type(error).__name__} ({reason})" if reason else type(error).__name__


class VapiApi:
    """The calls endpoints of VAPI's REST API, authenticated with the org's private key."""

    def __init__(
        self,
        api_key: str,
        base_url: Optional[str] = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self._api_key = api_key
        self.base_url = (base_url or VAPI_API_BASE_URL).rstrip("/")
        self.timeout = timeout

    def _headers(self) -> Dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}

    async def _request(
        self, method: str, path: str, *, json_body: Any = None, params: Any = None
    ) -> Any:
        sent = False
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.request(
                    method,
                    f"{self.base_url}{path}",
                    json=json_body,
                    params=params,
                    headers=self._headers(),
                ) as reply:
                    sent = True
                    text = await reply.text()
                    if reply.status >= 300:
                        raise VapiApiError(
                            f"{method} {path} answered HTTP {reply.status}: {_short(text)}",
                            status=reply.status,
                            retryable=reply.status >= 500 or reply.status == 429,
                            # A 5xx may come after the call was made; a 4xx is a refusal.
                            outcome_unknown=reply.status >= 500,
                        )
                    try:
                        return await reply.json(content_type=None)
                    except ValueError:
                        raise VapiApiError(
                            f"{method} {path}: answer is not JSON",
                            status=reply.status,
                            retryable=True,
                            outcome_unknown=True,
                        ) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            # A connection refused before anything was sent made no call; anything later may
            # have (the request was written, the answer lost).
            unknown = sent or not isinstance(error, aiohttp.ClientConnectorError)
            raise VapiApiError(
                f"{method} {path} failed: {_error_kind(error)}",
                status=None,
                retryable=True,
                outcome_unknown=unknown,
            ) from None

    async def create_call(self, call: OutboundCall) -> PlacedCall:
        """``POST /call``; raises VapiApiError."""
        answer = await self._request("POST", "/call", json_body=call.body())
        if not isinstance(answer, dict) or not isinstance(answer.get("id"), str):
            raise VapiApiError(
                "POST /call: answer has no call id",
                status=200,
                retryable=True,
                outcome_unknown=True,
            )
        return PlacedCall(str(answer["id"]), str(answer.get("status") or "queued"), answer)

    async def find_call(self, key: str, value: str, created_after: float) -> Optional[PlacedCall]:
        """The call created after ``created_after`` (epoch seconds) whose
        ``assistantOverrides.metadata[key]`` is ``value``, or None; raises VapiApiError."""
        answer = await self._request(
            "GET",
            "/call",
            params={"createdAtGt": _iso(created_after), "limit": str(RECONCILE_LIMIT)},
        )
        calls: List[Any] = answer if isinstance(answer, list) else []
        for found in calls:
            if not isinstance(found, dict):
                continue
            overrides = found.get("assistantOverrides") or {}
            metadata = overrides.get("metadata") if isinstance(overrides, dict) else None
            if isinstance(metadata, dict) and metadata.get(key) == value:
                return PlacedCall(str(found.get("id")), str(found.get("status") or ""), found)
        return None


def _short(text: str) -> str:
    """A vendor's error text, bounded and on one line (it may echo what we sent)."""
    return mask(" ".join(text.split())[:200])
