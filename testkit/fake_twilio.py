"""A local stand-in for Twilio's REST API: records the SMS our code sends.

It speaks the part of Twilio's protocol the SMS connector uses: ``POST
/2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded, HTTP basic auth with the account
SID and auth token), answering ``201`` with a Message resource, or Twilio's JSON error body; and
``GET`` on the same path, the Messages list the SMS outbox reconciles an unknown send with
(``To``, ``From`` and ``DateSent`` filters, newest first, in Twilio's paging shape). twilio-python's
real client is pointed at it through ``TWILIO_API_BASE_URL``.

Tests script failures (:meth:`FakeTwilio.fail_next`), sends whose outcome the caller cannot know
(:meth:`FakeTwilio.fail_after_create`: the message is created, then the answer is a 500 or the
connection drops), opted-out numbers (error 21610) and failed deliveries
(:meth:`FakeTwilio.fail_delivery`, reported through signed status callbacks when
``send_status_callbacks`` is on), and read :attr:`FakeTwilio.messages`. Other processes read
``GET /fake/messages``.

Run alone for `make run` and the SMS simulator: ``python -m testkit.fake_twilio --port 5056``.
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
from datetime import datetime, timezone
from email.utils import formatdate
from typing import Dict, List, Optional, Set, Tuple

from twilio.request_validator import RequestValidator

from testkit.fake_http import FakeServer, JsonHandler
from testkit.local_env import read_env_file

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Messages\.json$")
#: Twilio's default and largest page of a list.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: After creating a message: answer HTTP 500, or close the connection without an answer.
AFTER_CREATE_500 = "500"
AFTER_CREATE_DROP = "drop"


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


def _first(params: Dict[str, List[str]], name: str) -> Optional[str]:
    """The first value of a form field, None when it is absent."""
    values = params.get(name)
    return values[0] if values else None


def _day_or_time(value: str) -> Tuple[datetime, bool]:
    """A ``DateSent`` filter value (``YYYY-MM-DD``, or with a time as twilio-python sends it);
    True when only a day was given (Twilio then compares days)."""
    if len(value) == 10:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=timezone.utc), True
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc), False


def _date_sent_matches(sent_at: float, filters: Dict[str, str]) -> bool:
    sent = datetime.fromtimestamp(int(sent_at), timezone.utc)
    for key, compare in (
        ("DateSent", lambda a, b: a == b),
        ("DateSent>", lambda a, b: a >= b),
        ("DateSent<", lambda a, b: a <= b),
    ):
        if key not in filters:
            continue
        bound, day_only = _day_or_time(filters[key])
        if not compare(sent.date() if day_only else sent, bound.date() if day_only else bound):
            return False
    return True


class _Handler(JsonHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        fake: FakeTwilio = self.server.fake  # type: ignore[attr-defined]
        path, _, query = self.path.partition("?")
        if path == "/fake/messages":
            with fake.lock:
                self.send_json(200, [asdict(m) for m in fake.messages])
            return
        match = MESSAGES_PATH.match(path)
        if not match:
            self.send_json(404, {"code": 20404, "message": "The requested resource was not found"})
            return
        if not fake.authorised(match.group(1), self.headers.get("Authorization")):
            self.send_json(
                401, {"code": 20003, "message": "Authenticate", "status": 401, "more_info": ""}
            )
            return
        error = fake.next_list_failure()
        if error:
            self.send_json(
                error, {"code": 20500, "message": "Internal Server Error", "status": error}
            )
            return
        try:
            self.send_json(200, fake.list_page(match.group(1), path, query))
        except ValueError as error:
            self.send_json(400, {"code": 20001, "message": str(error), "status": 400})

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
            from_=_first(params, "From"),
            messaging_service_sid=_first(params, "MessagingServiceSid"),
            media_urls=params.get("MediaUrl") or [],
            status_callback=_first(params, "StatusCallback"),
            idempotency_token=self.headers.get("I-Twilio-Idempotency-Token"),
        )
        with fake.lock:
            fake.messages.append(message)
        after = fake.next_after_create()
        if after == AFTER_CREATE_DROP:
            # Created, but the caller never hears of it (a connection lost mid-answer).
            self.close_connection = True
            return
        if after == AFTER_CREATE_500:
            self.send_json(500, {"code": 20500, "message": "Internal Server Error", "status": 500})
            return
        self.send_json(201, _message_resource(message))
        if fake.send_status_callbacks and message.status_callback:
            threading.Thread(target=fake.report_status, args=(message,), daemon=True).start()


def _message_resource(message: SentMessage, listed: bool = False) -> Dict[str, object]:
    """The Message resource: as the creation answers it (queued, not sent yet), or as a list
    shows it later (``listed``: the fake "sends" at once, so it is sent at its creation time)."""
    created = formatdate(message.received_at, usegmt=True)
    return {
        "sid": message.sid,
        "account_sid": message.account_sid,
        "to": message.to,
        "from": message.from_,
        "messaging_service_sid": message.messaging_service_sid,
        "body": message.body,
        "status": "sent" if listed else "queued",
        "num_segments": "1",
        "num_media": str(len(message.media_urls)),
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "date_created": created,
        "date_updated": created,
        "date_sent": created if listed else None,
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
        self._after_create: List[str] = []
        self._list_failures: List[int] = []
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

    def fail_after_create(self, how: str = AFTER_CREATE_500, count: int = 1) -> None:
        """Create the next ``count`` messages, then answer HTTP 500 (``AFTER_CREATE_500``) or
        drop the connection (``AFTER_CREATE_DROP``): the caller cannot know they were sent."""
        if how not in (AFTER_CREATE_500, AFTER_CREATE_DROP):
            raise ValueError(f"unknown failure after creation: {how}")
        with self.lock:
            self._after_create.extend([how] * count)

    def fail_next_list(self, status: int = 500, count: int = 1) -> None:
        """Answer the next ``count`` reads of the Messages list with HTTP ``status``."""
        with self.lock:
            self._list_failures.extend([status] * count)

    def next_list_failure(self) -> Optional[int]:
        with self.lock:
            return self._list_failures.pop(0) if self._list_failures else None

    def next_after_create(self) -> Optional[str]:
        with self.lock:
            return self._after_create.pop(0) if self._after_create else None

    def list_page(self, account_sid: str, path: str, query: str) -> Dict[str, object]:
        """One page of ``GET …/Messages.json`` as Twilio answers it: the account's messages
        matching ``To``, ``From`` and ``DateSent`` (``=``, ``>=``, ``<=``; a message is "sent"
        when created here), newest first, ``PageSize`` (default 50) per ``Page``."""
        params = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        page_size = int(params.get("PageSize") or DEFAULT_PAGE_SIZE)
        page = int(params.get("Page") or 0)
        if not 1 <= page_size <= MAX_PAGE_SIZE or page < 0:
            raise ValueError("PageSize must be 1..1000 and Page at least 0")
        with self.lock:
            found = [
                m
                for m in self.messages
                if m.account_sid == account_sid
                and params.get("To", m.to) == m.to
                and params.get("From", m.from_) == m.from_
                and _date_sent_matches(m.received_at, params)
            ]
        found.sort(key=lambda m: m.received_at, reverse=True)
        start = page * page_size
        chunk = found[start : start + page_size]
        filters = {k: v for k, v in params.items() if k not in ("Page", "PageSize", "PageToken")}

        def page_uri(number: int) -> str:
            query = {**filters, "PageSize": page_size, "Page": number}
            if number:
                query["PageToken"] = f"PA{number}"
            return f"{path}?{urllib.parse.urlencode(query)}"

        more = start + page_size < len(found)
        return {
            "messages": [_message_resource(m, listed=True) for m in chunk],
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1) if more else None,
            "previous_page_uri": page_uri(page - 1) if page else None,
            "page": page,
            "page_size": page_size,
            "start": start,
            "end": start + max(len(chunk) - 1, 0),
            "uri": page_uri(page),
        }

    def fail_delivery(
        self, number: str, error_code: str = "30003", status: str = "undelivered"
    ) -> None:
        """Messages to ``number`` are accepted, then reported ``status`` with ``error_code``."""
        with self.lock:
            self._delivery_failures[number] = (status, error_code)

    def report_status(self, message: SentMessage) -> None:
        """Twilio's status callbacks for ``message``, signed with the auth token."""
        callback = message.status_callback
        if not callback:
            return
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
                callback,
                data=urllib.parse.urlencode(form).encode(),
                headers={
                    "X-Twilio-Signature": validator.compute_signature(callback, form),
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
