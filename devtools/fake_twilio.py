"""A local stand-in for Twilio's REST API: records the SMS our code sends.

It speaks the part of Twilio's protocol the SMS connector uses: ``POST
/2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded, HTTP basic auth with the account
SID and auth token), answering ``201`` with a Message resource, or Twilio's JSON error body.
twilio-python's real client is pointed at it through ``TWILIO_API_BASE_URL``.

Tests script failures (:meth:`FakeTwilio.fail_next`), opted-out numbers (error 21610) and failed
deliveries (:meth:`FakeTwilio.fail_delivery`, reported through signed status callbacks when
``send_status_callbacks`` is on), and read :attr:`FakeTwilio.messages`. Other processes read
``GET /fake/messages``.

Run alone for `make run` and the SMS simulator: ``python -m devtools.fake_twilio --port 5056``.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from typing import Dict, List, Optional, Set, Tuple

from twilio.request_validator import RequestValidator

from devtools.fake_http import FakeServer, JsonHandler

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Messages\.json$")


@dataclass
class SentMessage:
    """One message creation request as the fake received it."""

    sid: str
    account_sid: str
    to: str
    body: str
    from_: Optional[str]
    messaging_service_sid: Optional[str]
    media_urls: List[str]
    status_callback: Optional[str]
    idempotency_token: Optional[str]
    received_at: float = field(default_factory=time.time)


class _Handler(JsonHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        fake: FakeTwilio = self.server.fake  # type: ignore[attr-defined]
        if self.path.split("?")[0] == "/fake/messages":
            with fake.lock:
                self.send_json(200, [asdict(m) for m in fake.messages])
            return
        self.send_json(404, {"code": 20404, "message": "The requested resource was not found"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        fake: FakeTwilio = self.server.fake  # type: ignore[attr-defined]
        body = self.read_body()
        match = MESSAGES_PATH.match(self.path.split("?")[0])
        if not match:
            self.send_json(404, {"code": 20404, "message": "The requested resource was not found"})
            return
        account_sid = match.group(1)
        if not fake.authorised(account_sid, self.headers.get("Authorization")):
            self.send_json(
                401, {"code": 20003, "message": "Authenticate", "status": 401, "more_info": ""}
            )
            return
        params = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
        error = fake.next_failure()
        if error:
            self.send_json(
                error, {"code": 20500, "message": "Internal Server Error", "status": error}
            )
            return
        to = (params.get("To") or [""])[0]
        if not to:
            self.send_json(400, {"code": 21604, "message": "A 'To' phone number is required."})
            return
        if to in fake.opted_out:
            self.send_json(
                400,
                {
                    "code": 21610,
                    "message": "Attempt to send to unsubscribed recipient",
                    "status": 400,
                },
            )
            return
        message = SentMessage(
            sid="SM" + secrets.token_hex(16),
            account_sid=account_sid,
            to=to,
            body=(params.get("Body") or [""])[0],
            from_=(params.get("From") or [None])[0],
            messaging_service_sid=(params.get("MessagingServiceSid") or [None])[0],
            media_urls=params.get("MediaUrl") or [],
            status_callback=(params.get("StatusCallback") or [None])[0],
            idempotency_token=self.headers.get("I-Twilio-Idempotency-Token"),
        )
        with fake.lock:
            fake.messages.append(message)
        self.send_json(201, _message_resource(message))
        if fake.send_status_callbacks and message.status_callback:
            threading.Thread(target=fake.report_status, args=(message,), daemon=True).start()


def _message_resource(message: SentMessage) -> Dict[str, object]:
    now = formatdate(usegmt=True)
    return {
        "sid": message.sid,
        "account_sid": message.account_sid,
        "to": message.to,
        "from": message.from_,
        "messaging_service_sid": message.messaging_service_sid,
        "body": message.body,
        "status": "queued",
        "num_segments": "1",
        "num_media": str(len(message.media_urls)),
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "date_created": now,
        "date_updated": now,
        "date_sent": None,
        "price": None,
        "error_code": None,
        "error_message": None,
        "uri": f"/2010-04-01/Accounts/{message.account_sid}/Messages/{message.sid}.json",
        "subresource_uris": {},
    }


class FakeTwilio(FakeServer):
    """Twilio's Messages API on loopback, for one account (SID and auth token)."""

    handler_class = _Handler

    def __init__(self, account_sid: str, auth_token: str, port: int = 0) -> None:
        super().__init__(port)
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.messages: List[SentMessage] = []
        self.opted_out: Set[str] = set()
        self._failures: List[int] = []
        #: Post signed status callbacks ("sent", then "delivered" or a scripted failure) to each
        #: message's StatusCallback URL, as Twilio does. Off unless asked for.
        self.send_status_callbacks = False
        self._delivery_failures: Dict[str, Tuple[str, str]] = {}
        self.callback_answers: List[Tuple[str, str, int]] = []

    def authorised(self, account_sid: str, header: Optional[str]) -> bool:
        if account_sid != self.account_sid or not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except ValueError:
            return False
        return user == self.account_sid and secrets.compare_digest(password, self.auth_token)

    def fail_next(self, status: int = 500, count: int = 1) -> None:
        """Answer the next ``count`` message creations with HTTP ``status``."""
        with self.lock:
            self._failures.extend([status] * count)

    def fail_delivery(
        self, number: str, error_code: str = "30003", status: str = "undelivered"
    ) -> None:
        """Messages to ``number`` are accepted, then reported ``status`` with ``error_code``."""
        with self.lock:
            self._delivery_failures[number] = (status, error_code)

    def report_status(self, message: SentMessage) -> None:
        """Twilio's status callbacks for ``message``, signed with the auth token."""
        with self.lock:
            failure = self._delivery_failures.get(message.to)
        statuses = [("sent", None), failure or ("delivered", None)]
        validator = RequestValidator(self.auth_token)
        for status, error_code in statuses:
            form = {
                "MessageSid": message.sid,
                "SmsSid": message.sid,
                "MessageStatus": status,
                "SmsStatus": status,
                "AccountSid": message.account_sid,
                "From": message.from_ or "",
                "To": message.to,
                "ApiVersion": "2010-04-01",
            }
            if error_code:
                form["ErrorCode"] = error_code
            request = urllib.request.Request(
                message.status_callback,
                data=urllib.parse.urlencode(form).encode(),
                headers={
                    "X-Twilio-Signature": validator.compute_signature(
                        message.status_callback, form
                    ),
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:
                    code = answer.status
            except urllib.error.HTTPError as error:
                code = error.code
            except OSError:
                code = 0
            with self.lock:
                self.callback_answers.append((message.sid, status, code))

    def next_failure(self) -> Optional[int]:
        with self.lock:
            return self._failures.pop(0) if self._failures else None

    def messages_to(self, number: str) -> List[SentMessage]:
        with self.lock:
            return [m for m in self.messages if m.to == number]

    def wait_for_messages(
        self, number: str, count: int = 1, timeout: float = 30
    ) -> List[SentMessage]:
        """The messages sent to ``number`` once there are ``count`` of them (or TimeoutError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages_to(number)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"{count} message(s) to {number} not sent within {timeout:.0f} s")


def fetch_messages(base_url: str) -> List[dict]:
    """Messages recorded by a fake running in another process."""
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/fake/messages", timeout=5) as response:
        return json.load(response)


def main() -> None:
    from devtools.launcher import read_env_file

    parser = argparse.ArgumentParser(description="Local fake of Twilio's Messages REST API")
    parser.add_argument("--port", type=int, default=5056)
    parser.add_argument(
        "--no-status-callbacks",
        action="store_true",
        help="do not post status callbacks to the messages' StatusCallback URLs",
    )
    args = parser.parse_args()
    env = read_env_file()
    fake = FakeTwilio(env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"], port=args.port)
    fake.send_status_callbacks = not args.no_status_callbacks
    print(f"fake Twilio API on {fake.url}", flush=True)
    fake.serve_forever()


if __name__ == "__main__":
    main()
