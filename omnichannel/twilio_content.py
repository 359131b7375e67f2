"""Twilio's Content API: the Content resources WhatsApp needs, created and looked up.

Two uses:

- **Session content** (:class:`SessionContents`): tappable options inside the 24-hour window
  are a ``twilio/quick-reply`` or ``twilio/list-picker`` Content resource sent by its SID. One is
  created per distinct definition (buttons and text), the first time it is needed, and its SID
  kept in Redis (``omni:whatsapp:content:<sha256 of the definition>``, for
  :data:`SESSION_CONTENT_TTL_SECONDS`), so every later send of the same options reuses it. These
  types need no approval in a session (Twilio's content-types overview).
- **Templates** (:class:`TemplateCatalog`): approved WhatsApp templates by name, read from
  ``GET /v1/ContentAndApprovals`` and cached in the process for :data:`CATALOG_TTL_SECONDS`; the
  sender uses one outside the window. ``make whatsapp-templates`` creates them and asks for
  approval (devtools/whatsapp_templates.py).

twilio-python 8.2 (Rasa 3.6 pins ``twilio<8.3``) can list contents but cannot create one or ask
for approval (both take JSON bodies), so this speaks the documented JSON API itself over aiohttp,
with the account's credentials: ``POST /v1/Content``, ``POST
/v1/Content/{sid}/ApprovalRequests/whatsapp``, ``GET /v1/ContentAndApprovals``, ``DELETE
/v1/Content/{sid}``. ``TWILIO_API_BASE_URL`` (the local fake) replaces ``content.twilio.com``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import aiohttp

from omnichannel.redis_client import AnyRedis, global_key, redis_client
from omnichannel.settings import Settings

logger = logging.getLogger(__name__)

CONTENT_BASE_URL = "https://content.twilio.com"
#: How long the SID of a session content definition is reused.
SESSION_CONTENT_TTL_SECONDS = 30 * 24 * 3600
#: How long the process trusts its copy of the approved templates; a template it does not know
#: makes it read the list again, at most every MISS_RELOAD_SECONDS (one just approved is found).
CATALOG_TTL_SECONDS = 300.0
MISS_RELOAD_SECONDS = 5.0
#: Most pages of the contents list read at once (50 a page: 5,000 templates, below WhatsApp's
#: cap of 6,000 approved per account).
MAX_PAGES = 100
APPROVED = "approved"


class ContentApiError(Exception):
    """The Content API could not be reached, or refused (``status`` 0 when unreachable)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class ContentApi:
    """The Content API of one account."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        settings.require("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
        assert settings.twilio_account_sid and settings.twilio_auth_token  # required just above
        self.base_url = (settings.twilio_api_base_url or CONTENT_BASE_URL).rstrip("/")
        self.auth = aiohttp.BasicAuth(settings.twilio_account_sid, settings.twilio_auth_token)
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _request(
        self, method: str, path: str, body: Optional[Mapping[str, Any]] = None
    ) -> Dict[str, Any]:
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session:
                async with session.request(
                    method, url, json=body, auth=self.auth, allow_redirects=False
                ) as answer:
                    text = await answer.text()
                    if answer.status >= 400:
                        try:
                            detail = json.loads(text).get("message") or text[:200]
                        except (ValueError, AttributeError):
                            detail = text[:200]
                        raise ContentApiError(
                            f"Content API {method} {path}: HTTP {answer.status}: {detail}",
                            answer.status,
                        )
                    return json.loads(text) if text.strip() else {}
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise ContentApiError(
                f"Content API {method} {path} unreachable ({type(error).__name__})"
            ) from None

    async def create(
        self,
        friendly_name: str,
        types: Mapping[str, Any],
        language: str = "en",
        variables: Optional[Mapping[str, str]] = None,
    ) -> Dict[str, Any]:
        """``POST /v1/Content``: the new Content resource (its ``sid`` starts with HX)."""
        body: Dict[str, Any] = {
            "friendly_name": friendly_name,
            "language": language,
            "types": dict(types),
        }
        if variables:
            body["variables"] = dict(variables)
        return await self._request("POST", "/v1/Content", body)

    async def request_approval(self, sid: str, name: str, category: str) -> Dict[str, Any]:
        """Submits a Content resource to WhatsApp for approval as template ``name``."""
        return await self._request(
            "POST",
            f"/v1/Content/{sid}/ApprovalRequests/whatsapp",
            {"name": name, "category": category},
        )

    async def delete(self, sid: str) -> None:
        await self._request("DELETE", f"/v1/Content/{sid}")

    async def contents_and_approvals(self) -> List[Dict[str, Any]]:
        """Every Content resource of the account with its WhatsApp approval (all pages)."""
        found: List[Dict[str, Any]] = []
        url: Optional[str] = "/v1/ContentAndApprovals?PageSize=50"
        for _ in range(MAX_PAGES):
            if not url:
                break
            page = await self._request("GET", url)
            found.extend(page.get("contents") or [])
            url = (page.get("meta") or {}).get("next_page_url")
        return found


def approval_status(content: Mapping[str, Any]) -> Optional[str]:
    """A listed content's WhatsApp approval status (``approved``, ``pending``, ``rejected``,
    ``received``, …), or None when it was never submitted."""
    approval = content.get("approval_requests")
    if isinstance(approval, Mapping):
        status = approval.get("status")
        return str(status) if status else None
    return None


class SessionContents:
    """Content SIDs of the tappable options sent in sessions, created once per definition."""

    def __init__(self, api: ContentApi, redis: Optional[AnyRedis] = None) -> None:
        self.api = api
        self._redis = redis

    @property
    def redis(self) -> AnyRedis:
        return self._redis if self._redis is not None else redis_client()

    @staticmethod
    def key(digest: str) -> str:
        return global_key("whatsapp", "content", digest)

    async def sid_for(self, definition: Mapping[str, Any]) -> str:
        """The SID of the Content resource for ``definition`` (``{"types": …, "key": …}`` as
        :mod:`omnichannel.rendering.whatsapp` makes it), created when there is none yet.
        Raises ContentApiError or a Redis failure."""
        key = self.key(str(definition["key"]))
        cached = await self.redis.get(key)
        if cached:
            return cached.decode() if isinstance(cached, bytes) else str(cached)
        name = f"omni_session_{str(definition['key'])[:16]}"
        created = await self.api.create(name, definition["types"])
        sid = str(created["sid"])
        # Two replicas creating the same options at once leave two resources; either serves.
        await self.redis.set(key, sid, ex=SESSION_CONTENT_TTL_SECONDS, nx=True)
        logger.info("WhatsApp session content %s created (%s)", sid, ", ".join(definition["types"]))
        return sid


def content_body(types: Mapping[str, Any]) -> str:
    """The text a Content resource shows (the ``body`` of its first type that has one)."""
    for definition in types.values():
        body = definition.get("body") if isinstance(definition, Mapping) else None
        if isinstance(body, str):
            return body
    return ""


@dataclass(frozen=True)
class ApprovedTemplate:
    sid: str
    #: The template's text with its ``{{n}}`` variables.
    body: str


class TemplateCatalog:
    """Approved WhatsApp templates by their name (the Content resource's ``friendly_name``)."""

    def __init__(self, api: ContentApi, ttl_seconds: float = CATALOG_TTL_SECONDS) -> None:
        self.api = api
        self.ttl = ttl_seconds
        self._loaded_at = 0.0
        self._approved: Dict[str, ApprovedTemplate] = {}

    async def approved(self, name: str) -> Optional[ApprovedTemplate]:
        """The approved template ``name``, or None when there is none approved (yet). Raises
        ContentApiError when the list cannot be read. (Two look-ups racing on an expired copy
        both read the list: harmless.)"""
        age = time.monotonic() - self._loaded_at
        if age > self.ttl or (name not in self._approved and age > MISS_RELOAD_SECONDS):
            contents = await self.api.contents_and_approvals()
            self._approved = {
                str(item.get("friendly_name")): ApprovedTemplate(
                    str(item["sid"]), content_body(item.get("types") or {})
                )
                for item in contents
                if approval_status(item) == APPROVED and item.get("sid")
            }
            self._loaded_at = time.monotonic()
        return self._approved.get(name)

    def forget(self) -> None:
        """Read the list again on the next look-up (a template was just approved)."""
        self._loaded_at = 0.0


#: Catalogs per (account, base URL) of this process, so every sender shares one cache.
_catalogs: Dict[Tuple[str, str], TemplateCatalog] = {}


def template_catalog(settings: Settings) -> TemplateCatalog:
    api = ContentApi(settings)
    key = (str(settings.twilio_account_sid), api.base_url)
    catalog = _catalogs.get(key)
    if catalog is None:
        catalog = _catalogs[key] = TemplateCatalog(api)
    return catalog
