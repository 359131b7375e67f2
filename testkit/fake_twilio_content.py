"""The Content API part of the local Twilio fake (devtools/fake_twilio.py serves it).

It follows Twilio's documented Content API: ``POST /v1/Content`` (JSON: ``friendly_name``,
``language``, ``variables``, ``types``) answers 201 with an ``HX…`` resource; ``GET /v1/Content``
and ``/v1/Content/{sid}``; ``DELETE /v1/Content/{sid}``; ``POST
/v1/Content/{sid}/ApprovalRequests/whatsapp`` (``name``, ``category``) submits it to WhatsApp;
``GET /v1/Content/{sid}/ApprovalRequests`` and ``GET /v1/ContentAndApprovals`` show the approval.
It checks what Twilio's content-type pages state: bodies up to 1,024 characters for quick replies
and list pickers (1,600 for text), 1 to 10 quick-reply actions, 1 to 10 list items of at most 24
characters with ids of at most 200, list pickers never approvable, a category among UTILITY,
MARKETING and AUTHENTICATION, and WhatsApp's rule that a template body may not start or end
with a variable or hold two side by side.

Approval is immediate (``approved``) unless the fake is told to keep requests ``pending``
(:attr:`ContentStore.auto_approve`), decided later with :meth:`ContentStore.decide`.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

CATEGORIES = ("UTILITY", "MARKETING", "AUTHENTICATION")
#: Content types WhatsApp may approve as templates (list pickers and locations are session-only).
APPROVABLE = (
    "twilio/text",
    "twilio/media",
    "twilio/quick-reply",
    "twilio/call-to-action",
    "twilio/card",
)
SESSION_ONLY = ("twilio/list-picker", "twilio/location")
_VARIABLE = re.compile(r"\{\{(\d+)\}\}")


class ContentError(Exception):
    """A request the Content API refuses: HTTP ``status``, Twilio ``code``, ``message``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Content:
    sid: str
    account_sid: str
    friendly_name: str
    language: str
    variables: Dict[str, str]
    types: Dict[str, Any]
    created: str = field(default_factory=_now)
    approval: Optional[Dict[str, Any]] = None

    @property
    def content_type(self) -> str:
        return next(iter(self.types))

    @property
    def body(self) -> str:
        definition = self.types[self.content_type]
        return str(definition.get("body") or "") if isinstance(definition, dict) else ""

    @property
    def approved(self) -> bool:
        return bool(self.approval and self.approval.get("status") == "approved")

    def resource(self, base: str) -> Dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "friendly_name": self.friendly_name,
            "language": self.language,
            "variables": self.variables,
            "types": self.types,
            "date_created": self.created,
            "date_updated": self.created,
            "url": f"{base}/v1/Content/{self.sid}",
            "links": {
                "approval_fetch": f"{base}/v1/Content/{self.sid}/ApprovalRequests",
                "approval_create": f"{base}/v1/Content/{self.sid}/ApprovalRequests/whatsapp",
            },
        }

    def rendered(self, variables: Dict[str, str]) -> str:
        """The body as a recipient reads it: variables from the send, else the samples."""
        return _VARIABLE.sub(
            lambda m: variables.get(m.group(1), self.variables.get(m.group(1), m.group(0))),
            self.body,
        )


def _check_types(types: Any) -> None:
    if not isinstance(types, dict) or len(types) != 1:
        raise ContentError(400, 20001, "types must hold exactly one content type")
    kind, definition = next(iter(types.items()))
    if not isinstance(definition, dict):
        raise ContentError(400, 20001, f"{kind} must be an object")
    body = definition.get("body")
    if kind in ("twilio/text", "twilio/quick-reply", "twilio/list-picker"):
        if not isinstance(body, str) or not body.strip():
            raise ContentError(400, 20001, f"{kind}: body is required")
    if kind == "twilio/text" and len(str(body)) > 1600:
        raise ContentError(400, 20001, "twilio/text: body longer than 1600 characters")
    if kind in ("twilio/quick-reply", "twilio/list-picker") and len(str(body)) > 1024:
        raise ContentError(400, 20001, f"{kind}: body longer than 1024 characters")
    if kind == "twilio/quick-reply":
        actions = definition.get("actions")
        if not isinstance(actions, list) or not 1 <= len(actions) <= 10:
            raise ContentError(400, 20001, "twilio/quick-reply: 1 to 10 actions")
        for action in actions:
            if not isinstance(action, dict) or not action.get("title"):
                raise ContentError(400, 20001, "twilio/quick-reply: each action needs a title")
    if kind == "twilio/list-picker":
        items = definition.get("items")
        if not definition.get("button"):
            raise ContentError(400, 20001, "twilio/list-picker: button is required")
        if not isinstance(items, list) or not 1 <= len(items) <= 10:
            raise ContentError(400, 20001, "twilio/list-picker: 1 to 10 items")
        for item in items:
            if not isinstance(item, dict) or not item.get("item") or not item.get("id"):
                raise ContentError(400, 20001, "twilio/list-picker: each item needs item and id")
            if len(str(item["item"])) > 24 or len(str(item["id"])) > 200:
                raise ContentError(400, 20001, "twilio/list-picker: item over 24 or id over 200")
            if len(str(item.get("description") or "")) > 72:
                raise ContentError(400, 20001, "twilio/list-picker: description over 72")


class ContentStore:
    """The Content resources and WhatsApp approvals of one fake account (thread-safe)."""

    def __init__(self, account_sid: str) -> None:
        self.account_sid = account_sid
        self.contents: Dict[str, Content] = {}
        self.lock = threading.Lock()
        #: Approve every request at once; False keeps them ``pending`` until :meth:`decide`.
        self.auto_approve = True
        #: Every request seen, as (method, path) pairs, for tests.
        self.requests: List[Tuple[str, str]] = []
        self._failures: List[int] = []

    def fail_next(self, status: int = 500, count: int = 1) -> None:
        """Answer the next ``count`` Content API requests with HTTP ``status``."""
        with self.lock:
            self._failures.extend([status] * count)

    def next_failure(self) -> Optional[int]:
        with self.lock:
            return self._failures.pop(0) if self._failures else None

    def create(self, body: Any) -> Content:
        if not isinstance(body, dict):
            raise ContentError(400, 20001, "the body must be a JSON object")
        name = body.get("friendly_name")
        if not isinstance(name, str) or not name:
            raise ContentError(400, 20001, "friendly_name is required")
        _check_types(body.get("types"))
        variables = body.get("variables") or {}
        if not isinstance(variables, dict):
            raise ContentError(400, 20001, "variables must be an object")
        content = Content(
            sid="HX" + secrets.token_hex(16),
            account_sid=self.account_sid,
            friendly_name=name,
            language=str(body.get("language") or "en"),
            variables={str(k): str(v) for k, v in variables.items()},
            types=body["types"],
        )
        with self.lock:
            self.contents[content.sid] = content
        return content

    def get(self, sid: str) -> Content:
        with self.lock:
            content = self.contents.get(sid)
        if content is None:
            raise ContentError(404, 20404, "The requested resource was not found")
        return content

    def delete(self, sid: str) -> None:
        with self.lock:
            if self.contents.pop(sid, None) is None:
                raise ContentError(404, 20404, "The requested resource was not found")

    def request_approval(self, sid: str, body: Any) -> Dict[str, Any]:
        content = self.get(sid)
        if not isinstance(body, dict) or not body.get("name") or not body.get("category"):
            raise ContentError(400, 20001, "name and category are required")
        category = str(body["category"]).upper()
        if category not in CATEGORIES:
            raise ContentError(400, 20001, f"category must be one of {', '.join(CATEGORIES)}")
        if content.content_type not in APPROVABLE:
            raise ContentError(
                400, 20001, f"{content.content_type} cannot be submitted for WhatsApp approval"
            )
        template = content.body.strip()
        rejection = ""
        if _VARIABLE.match(template) or re.search(r"\{\{\d+\}\}$", template):
            rejection = "The template starts or ends with a variable"
        elif re.search(r"\}\}\s*\{\{", template):
            rejection = "The template has adjacent variables"
        elif any(not content.variables.get(n) for n in _VARIABLE.findall(template)):
            rejection = "A sample is required for every variable"
        status = "rejected" if rejection else ("approved" if self.auto_approve else "pending")
        approval = {
            "name": str(body["name"]),
            "category": category,
            "content_type": content.content_type,
            "status": status,
            "rejection_reason": rejection,
            "allow_category_change": True,
        }
        with self.lock:
            content.approval = approval
        return dict(approval)

    def decide(self, name: str, status: str, reason: str = "") -> None:
        """Settle a pending approval of template ``name`` (``approved`` or ``rejected``)."""
        with self.lock:
            for content in self.contents.values():
                if content.approval and content.approval["name"] == name:
                    content.approval["status"] = status
                    content.approval["rejection_reason"] = reason

    def approval_of(self, sid: str, base: str) -> Dict[str, Any]:
        content = self.get(sid)
        whatsapp = dict(content.approval or {"status": "unsubmitted"})
        whatsapp.setdefault("type", "whatsapp")
        return {
            "sid": sid,
            "account_sid": self.account_sid,
            "whatsapp": whatsapp,
            "url": f"{base}/v1/Content/{sid}/ApprovalRequests",
        }

    def page(self, base: str, path: str, with_approvals: bool, page: int, size: int) -> Dict:
        with self.lock:
            everything = sorted(self.contents.values(), key=lambda c: c.created)
        chunk = everything[page * size : (page + 1) * size]
        items = []
        for content in chunk:
            item = content.resource(base)
            if with_approvals:
                item["approval_requests"] = dict(content.approval or {})
            items.append(item)
        more = (page + 1) * size < len(everything)
        return {
            "contents": items,
            "meta": {
                "page": page,
                "page_size": size,
                "first_page_url": f"{base}{path}?PageSize={size}&Page=0",
                "previous_page_url": f"{base}{path}?PageSize={size}&Page={page - 1}"
                if page
                else None,
                "url": f"{base}{path}?PageSize={size}&Page={page}",
                "next_page_url": f"{base}{path}?PageSize={size}&Page={page + 1}" if more else None,
                "key": "contents",
            },
        }

    def by_name(self, name: str) -> List[Content]:
        with self.lock:
            return [c for c in self.contents.values() if c.friendly_name == name]

    @staticmethod
    def variables_of(raw: Optional[str]) -> Dict[str, str]:
        """``ContentVariables`` of a send: a JSON object of strings (Twilio answers 21656
        otherwise)."""
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise ContentError(400, 21656, "The ContentVariables Parameter is invalid") from None
        if not isinstance(data, dict) or len(data) > 100:
            raise ContentError(400, 21656, "The ContentVariables Parameter is invalid")
        return {str(k): str(v) for k, v in data.items()}
