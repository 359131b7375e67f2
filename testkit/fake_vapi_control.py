"""A local stand-in for VAPI's Live Call Control endpoint (``call.monitor.controlUrl``).

VAPI gives every call a control URL that carries its own token; POSTing JSON to it makes VAPI
say something, add a message, end the call or transfer it. This fake answers like VAPI (``200``
with an empty JSON object) and records each request, so tests and the simulator see what the
connector asked VAPI to do. Tests can make it fail (:meth:`FakeVapiControl.fail_next`).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from testkit.fake_http import FakeServer, JsonHandler

CONTROL_PATH = re.compile(r"^/calls/([^/]+)/control/([A-Za-z0-9_-]+)$")


@dataclass
class ControlRequest:
    """One control request as VAPI would have received it."""

    call_id: str
    payload: Dict[str, Any]
    received_at: float = field(default_factory=time.time)
    #: What the fake answered: 200, or the status of a scripted failure.
    status: int = 200


class _Handler(JsonHandler):
    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        fake: FakeVapiControl = self.server.fake  # type: ignore[attr-defined]
        body = self.read_body()
        match = CONTROL_PATH.match(self.path.split("?")[0])
        if not match or match.group(2) != fake.token:
            self.send_json(404, {"message": "Not Found", "statusCode": 404})
            return
        try:
            payload = json.loads(body or b"")
        except ValueError:
            self.send_json(400, {"message": "invalid JSON", "statusCode": 400})
            return
        if not isinstance(payload, dict) or not isinstance(payload.get("type"), str):
            self.send_json(400, {"message": "type is required", "statusCode": 400})
            return
        status = fake.next_failure()
        request = ControlRequest(match.group(1), payload, status=status or 200)
        with fake.lock:
            fake.attempts.append(request)
            if not status:
                fake.requests.append(request)
        if status:
            self.send_json(status, {"message": "scripted failure", "statusCode": status})
            return
        self.send_json(200, {})


class FakeVapiControl(FakeServer):
    """Live Call Control on loopback; one secret token in every call's control URL."""

    handler_class = _Handler

    def __init__(self, port: int = 0) -> None:
        super().__init__(port)
        self.token = secrets.token_urlsafe(12)
        #: The requests it carried out (answered 200).
        self.requests: List[ControlRequest] = []
        #: Every well-formed request, those answered with a scripted failure included.
        self.attempts: List[ControlRequest] = []
        self._failures: List[int] = []

    def control_url(self, call_id: str) -> str:
        """What VAPI would put in ``call.monitor.controlUrl`` for this call."""
        return f"{self.url}/calls/{call_id}/control/{self.token}"

    def fail_next(self, status: int = 500, count: int = 1) -> None:
        with self.lock:
            self._failures.extend([status] * count)

    def next_failure(self) -> Optional[int]:
        with self.lock:
            return self._failures.pop(0) if self._failures else None

    def requests_for(self, call_id: str) -> List[ControlRequest]:
        with self.lock:
            return [r for r in self.requests if r.call_id == call_id]

    def attempts_for(self, call_id: str) -> List[ControlRequest]:
        with self.lock:
            return [r for r in self.attempts if r.call_id == call_id]

    def wait_for(self, call_id: str, count: int = 1, timeout: float = 10) -> List[ControlRequest]:
        """The control requests for ``call_id`` once there are ``count`` (or TimeoutError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.requests_for(call_id)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        raise TimeoutError(f"{count} control request(s) for call {call_id} not seen in {timeout} s")
