"""A local stand-in for VAPI's REST API for calls (``POST /call``, ``GET /call``, ``GET
/call/{id}``) together with Live Call Control on the calls it creates.

It follows VAPI's documented API (docs/specs/vapi-outbound-and-transfer.md; VAPI's OpenAPI
CreateCallDTO and Call): ``Authorization: Bearer <private key>``; a body with ``phoneNumberId``,
``customer.number`` (E.164) and ``assistantId`` or a transient ``assistant``, optionally
``assistantOverrides`` and ``name``; answered ``201`` with the Call (``id``, ``status: queued``,
``type: outboundPhoneCall``, ``monitor.controlUrl`` on this server, ``createdAt``). A wrong key
is a 401, a malformed body a 400 with VAPI's ``{"message": [...], "error": "Bad Request",
"statusCode": 400}``. ``GET /call`` lists calls newest first, filtered by ``createdAtGt`` and
``limit``.

Nothing rings: a test plays the callee with :meth:`FakeVapi.answer`, a
:class:`~testkit.vapi_call.VapiCall` for the created call (its first message already in the
history, its metadata in every request, as VAPI sends them); its status updates and
end-of-call report are that call's server messages (``VapiCall.event``). Tests can script
failures (:meth:`fail_next_create`), hold a creation's answer after the call exists
(:meth:`hold_creates`: the moment a replica may die), or answer it with an error after making
the call (:meth:`fail_after_create`).
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional
from urllib.parse import parse_qs, urlsplit

from testkit.fake_vapi_control import CONTROL_PATH, FakeVapiControl, _Handler
from testkit.vapi_call import VapiCall

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
CALL_PATH = re.compile(r"^/call/([A-Za-z0-9-]+)$")


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="milliseconds")


def _parse_iso(text: str) -> Optional[float]:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class _ApiHandler(_Handler):
    def _fake(self) -> FakeVapi:
        return self.server.fake  # type: ignore[attr-defined]

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self._fake().api_key}":
            return True
        self.send_json(401, {"message": "Unauthorized", "statusCode": 401})
        return False

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        path = self.path.split("?")[0]
        if CONTROL_PATH.match(path):
            super().do_POST()
            return
        if path != "/call":
            self.read_body()
            self.send_json(404, {"message": "Cannot POST " + path, "statusCode": 404})
            return
        body = self.read_body()
        if not self._authorised():
            return
        fake = self._fake()
        try:
            payload = json.loads(body or b"")
        except ValueError:
            self.send_json(400, {"message": ["invalid JSON"], "statusCode": 400})
            return
        problems = fake.problems(payload)
        if problems:
            self.send_json(400, {"message": problems, "error": "Bad Request", "statusCode": 400})
            return
        status = fake.next_create_failure()
        if status:
            self.send_json(status, {"message": "scripted failure", "statusCode": status})
            return
        call = fake.create(payload)
        fake.wait_while_held()
        status = fake.next_after_create()
        if status:
            self.send_json(status, {"message": "scripted failure", "statusCode": status})
            return
        self.send_json(201, call)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        parts = urlsplit(self.path)
        if not self._authorised():
            return
        fake = self._fake()
        if parts.path == "/call":
            status = fake.next_list_failure()
            if status:
                self.send_json(status, {"message": "scripted failure", "statusCode": status})
                return
            query = parse_qs(parts.query)
            after = _parse_iso((query.get("createdAtGt") or [""])[0])
            limit = int((query.get("limit") or ["100"])[0])
            self.send_json(200, fake.listed(after, limit))
            return
        match = CALL_PATH.match(parts.path)
        found = fake.call(match.group(1)) if match else None
        if found is None:
            self.send_json(404, {"message": "Not Found", "statusCode": 404})
            return
        self.send_json(200, found)


class FakeVapi(FakeVapiControl):
    """VAPI's call API and Live Call Control on loopback."""

    handler_class = _ApiHandler

    def __init__(
        self,
        api_key: str,
        phone_number_id: str,
        assistant_id: Optional[str] = None,
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.phone_number_id = phone_number_id
        self.assistant_id = assistant_id
        self.org_id = str(uuid.uuid4())
        #: Created calls, oldest first.
        self.calls: List[Dict[str, Any]] = []
        self._create_failures: List[int] = []
        self._after_create: List[int] = []
        self._list_failures: List[int] = []
        self._released = threading.Event()
        self._released.set()
        #: Set whenever a call is created (tests wait on it).
        self.created = threading.Condition(self.lock)

    # -- the API ------------------------------------------------------------------------------

    def problems(self, payload: Any) -> List[str]:
        """What VAPI would refuse in a CreateCallDTO (empty when it is acceptable)."""
        if not isinstance(payload, dict):
            return ["body must be an object"]
        found = []
        if payload.get("phoneNumberId") != self.phone_number_id:
            found.append("phoneNumberId must be a phone number of this org")
        customer = payload.get("customer")
        number = customer.get("number") if isinstance(customer, dict) else None
        if not isinstance(number, str) or not E164.match(number):
            found.append("customer.number must be a valid phone number in the E.164 format")
        has_id = isinstance(payload.get("assistantId"), str)
        has_transient = isinstance(payload.get("assistant"), dict)
        if has_id == has_transient:
            found.append("exactly one of assistantId or assistant is required")
        elif has_id and self.assistant_id and payload["assistantId"] != self.assistant_id:
            found.append("assistantId must be an assistant of this org")
        overrides = payload.get("assistantOverrides")
        if overrides is not None and not isinstance(overrides, dict):
            found.append("assistantOverrides must be an object")
        name = payload.get("name")
        if name is not None and (not isinstance(name, str) or len(name) > 40):
            found.append("name must be shorter than or equal to 40 characters")
        return found

    def create(self, payload: Dict[str, Any]) -> Dict[str, Any]:
        call_id = str(uuid.uuid4())
        now = time.time()
        call: Dict[str, Any] = {
            "id": call_id,
            "orgId": self.org_id,
            "type": "outboundPhoneCall",
            "status": "queued",
            "createdAt": _iso(now),
            "updatedAt": _iso(now),
            "phoneNumberId": payload["phoneNumberId"],
            "customer": payload["customer"],
            "monitor": {
                "listenUrl": f"ws://127.0.0.1:{self.port}/calls/{call_id}/listen",
                "controlUrl": self.control_url(call_id),
            },
        }
        for name in ("assistantId", "assistant", "assistantOverrides", "name"):
            if name in payload:
                call[name] = payload[name]
        with self.created:
            self.calls.append(call)
            self.created.notify_all()
        return call

    def listed(self, after: Optional[float], limit: int) -> List[Dict[str, Any]]:
        with self.lock:
            calls = list(reversed(self.calls))
        if after is not None:
            calls = [c for c in calls if (_parse_iso(c["createdAt"]) or 0) > after]
        return calls[: max(0, limit)]

    def call(self, call_id: str) -> Optional[Dict[str, Any]]:
        with self.lock:
            return next((c for c in self.calls if c["id"] == call_id), None)

    # -- scripting ----------------------------------------------------------------------------

    def fail_next_create(self, status: int = 500, count: int = 1) -> None:
        """The next ``count`` creations are answered ``status`` (and make no call)."""
        with self.lock:
            self._create_failures.extend([status] * count)

    def next_create_failure(self) -> Optional[int]:
        with self.lock:
            return self._create_failures.pop(0) if self._create_failures else None

    def fail_after_create(self, status: int = 500, count: int = 1) -> None:
        """The next ``count`` creations make the call, then answer ``status`` (its answer lost,
        as far as the client can tell)."""
        with self.lock:
            self._after_create.extend([status] * count)

    def fail_next_list(self, status: int = 500, count: int = 1) -> None:
        """The next ``count`` listings (``GET /call``) are answered ``status``."""
        with self.lock:
            self._list_failures.extend([status] * count)

    def next_list_failure(self) -> Optional[int]:
        with self.lock:
            return self._list_failures.pop(0) if self._list_failures else None

    def next_after_create(self) -> Optional[int]:
        with self.lock:
            return self._after_create.pop(0) if self._after_create else None

    def hold_creates(self) -> None:
        """From now on a creation makes the call, then waits for :meth:`release` to answer."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    def wait_while_held(self) -> None:
        self._released.wait(timeout=120)

    def wait_for_calls(self, count: int = 1, timeout: float = 15) -> List[Dict[str, Any]]:
        """The created calls once there are ``count`` (or TimeoutError)."""
        deadline = time.monotonic() + timeout
        with self.created:
            while len(self.calls) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{count} call(s) not created in {timeout} s")
                self.created.wait(left)
            return list(self.calls)

    # -- the callee -------------------------------------------------------------------------

    @staticmethod
    def first_message(call: Dict[str, Any]) -> str:
        overrides = call.get("assistantOverrides") or {}
        return str(
            overrides.get("firstMessage") or (call.get("assistant") or {}).get("firstMessage") or ""
        )

    def answer(
        self,
        call: Dict[str, Any],
        base_url: str,
        server_secret: str,
        custom_llm_key: Optional[str] = None,
    ) -> VapiCall:
        """The created ``call`` as VAPI runs it against ``base_url`` once the callee picks up:
        the first message spoken (so in the history), the metadata in every request."""
        overrides = call.get("assistantOverrides") or {}
        placed = VapiCall(
            base_url=base_url,
            server_secret=server_secret,
            number=call["customer"]["number"],
            custom_llm_key=custom_llm_key,
            call_id=call["id"],
            call_type="outboundPhoneCall",
            control_url=call["monitor"]["controlUrl"],
            metadata=dict(overrides.get("metadata") or {}),
        )
        first = self.first_message(call)
        if first:
            placed.history.append({"role": "assistant", "content": first})
        return placed
