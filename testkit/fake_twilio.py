"""A local stand-in for Twilio's REST API: records the SMS and WhatsApp messages our code sends.

It speaks the part of Twilio's protocol the connector uses: ``POST
/2010-04-01/Accounts/{AccountSid}/Messages.json`` (form-encoded, HTTP basic auth with the account
SID and auth token), answering ``201`` with a Message resource, or Twilio's JSON error body; and
``GET`` on the same path, the Messages list the SMS outbox reconciles an unknown send with
(``To``, ``From`` and ``DateSent`` filters, newest first, in Twilio's paging shape). twilio-python's
real client is pointed at it through ``TWILIO_API_BASE_URL``.

WhatsApp as Twilio runs it: ``whatsapp:+…`` addresses; the 24-hour window opened by each inbound
message the fake delivered (:meth:`FakeTwilio.deliver_inbound`, or :meth:`customer_wrote`);
``ContentSid`` + ``ContentVariables`` sends of the Content API resources it keeps
(devtools/fake_twilio_content.py, served on the same port as ``content.twilio.com``); free-form
messages, unapproved content and session-only types (list picker) outside the window are
accepted and then fail with error 63016, reported by status callback, as Twilio reports them; a
number not on WhatsApp fails with 63024; only the first media of a WhatsApp message is kept;
delivery goes sent, delivered, then read. Media of inbound messages (:meth:`add_media`) is served
as Twilio serves it with "Enforce HTTP Auth on Media URLs": the ``MediaUrl`` answers only with
the account's credentials, by a redirect to a short-lived URL (``/fake/cdn/…``) that needs none.

Tests script failures (:meth:`FakeTwilio.fail_next`), sends whose outcome the caller cannot know
(:meth:`FakeTwilio.fail_after_create`: the message is created, then the answer is a 500, the
connection drops, or the answer waits while the test kills the sender;
:meth:`FakeTwilio.hold_after_create`: created, and the answer held back until the test releases
it), opted-out numbers (error 21610) and failed deliveries (:meth:`FakeTwilio.fail_delivery`,
reported through signed status callbacks when ``send_status_callbacks`` is on), and read
:attr:`FakeTwilio.messages`. Other processes read ``GET /fake/messages``.

Run alone for `make run` and the SMS simulator: ``python -m testkit.fake_twilio --port 5056``;
other processes hand it an inbound message to deliver with ``POST /fake/inbound`` (JSON
``{"url": <webhook URL>, "form": {…}}``).
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
from testkit.fake_twilio_content import SESSION_ONLY, Content, ContentError, ContentStore
from testkit.local_env import read_env_file

MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Messages\.json$")
MEDIA_PATH = re.compile(
    r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Messages/(MM[0-9a-f]{32})/Media/(ME[0-9a-f]{32})$"
)
CONTENT_PATH = re.compile(r"^/v1/Content(?:/(HX[0-9a-f]{32}))?(/ApprovalRequests(?:/whatsapp)?)?$")
WHATSAPP = "whatsapp:"
WINDOW_SECONDS = 24 * 3600
#: How long a redirect target of a media URL stays valid (Twilio: 4 hours).
CDN_URL_SECONDS = 4 * 3600
#: Quick replies WhatsApp shows in a session message that is not an approved template.
SESSION_QUICK_REPLIES = 3
#: Twilio's default and largest page of a list.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: After creating a message: answer HTTP 500, or close the connection without an answer.
AFTER_CREATE_500 = "500"
AFTER_CREATE_DROP = "drop"
#: Created, then the answer waits until the test releases it (the caller dies meanwhile).
AFTER_CREATE_HOLD = "hold"


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
    content_sid: Optional[str] = None
    content_variables: Dict[str, str] = field(default_factory=dict)
    #: The titles of the tappable options a Content resource showed (quick replies, a list).
    options: List[str] = field(default_factory=list)
    #: What became of it: "sent" until a failure is decided at creation ("failed").
    status: str = "sent"
    error_code: Optional[str] = None

    @property
    def channel(self) -> str:
        return "whatsapp" if self.to.startswith(WHATSAPP) else "sms"


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


def _unauthorised() -> Tuple[int, Dict[str, object]]:
    return 401, {"code": 20003, "message": "Authenticate", "status": 401, "more_info": ""}


class _Handler(JsonHandler):
    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        fake: FakeTwilio = self.server.fake  # type: ignore[attr-defined]
        path, _, query = self.path.partition("?")
        if path == "/fake/messages":
            with fake.lock:
                self.send_json(200, [asdict(m) for m in fake.messages])
            return
        if path.startswith("/fake/cdn/"):
            self._cdn(fake, path[len("/fake/cdn/") :])
            return
        if path.startswith("/v1/"):
            self._content(fake, "GET", path, query)
            return
        media = MEDIA_PATH.match(path)
        if media:
            self._media(fake, media)
            return
        match = MESSAGES_PATH.match(path)
        if not match:
            self.send_json(404, {"code": 20404, "message": "The requested resource was not found"})
            return
        if not fake.authorised(match.group(1), self.headers.get("Authorization")):
            self.send_json(*_unauthorised())
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

    def do_DELETE(self) -> None:  # noqa: N802 - stdlib naming
        fake: FakeTwilio = self.server.fake  # type: ignore[attr-defined]
        path, _, query = self.path.partition("?")
        self._content(fake, "DELETE", path, query)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        fake: FakeTwilio = self.server.fake  # type: ignore[attr-defined]
        body = self.read_body()
        path = self.path.split("?")[0]
        if path == "/fake/inbound":
            request = json.loads(body or b"{}")
            status, text = fake.deliver_inbound(request["url"], request["form"])
            self.send_json(200, {"status": status, "body": text})
            return
        if path.startswith("/v1/"):
            self._content(fake, "POST", path, "", body)
            return
        match = MESSAGES_PATH.match(path)
        if not match:
            self.send_json(404, {"code": 20404, "message": "The requested resource was not found"})
            return
        account_sid = match.group(1)
        if not fake.authorised(account_sid, self.headers.get("Authorization")):
            self.send_json(*_unauthorised())
            return
        params = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
        error = fake.next_failure()
        if error:
            self.send_json(
                error, {"code": 20500, "message": "Internal Server Error", "status": error}
            )
            return
        try:
            message = fake.create_message(account_sid, params, self.headers)
        except ContentError as refused:
            self.send_json(
                refused.status,
                {"code": refused.code, "message": str(refused), "status": refused.status},
            )
            return
        held = fake.next_hold()
        if held is not None:
            held.wait(60)
        after = fake.next_after_create()
        if after == AFTER_CREATE_HOLD:
            # The send moment: the message exists, the caller has not heard so (yet).
            fake.holding.set()
            fake.release.wait(120)
            self.close_connection = True
            return
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

    # -- Content API ---------------------------------------------------------------------------

    def _content(
        self, fake: FakeTwilio, method: str, path: str, query: str, body: bytes = b""
    ) -> None:
        store = fake.content
        with store.lock:
            store.requests.append((method, path))
        if not fake.authorised(fake.account_sid, self.headers.get("Authorization")):
            self.send_json(*_unauthorised())
            return
        failure = store.next_failure()
        if failure:
            self.send_json(failure, {"code": 20500, "message": "Unavailable", "status": failure})
            return
        base = fake.url
        params = dict(urllib.parse.parse_qsl(query))
        try:
            if path in ("/v1/ContentAndApprovals", "/v1/Content") and method == "GET":
                size = min(int(params.get("PageSize") or 50), 500)
                page = int(params.get("Page") or 0)
                listed_with_approvals = path == "/v1/ContentAndApprovals"
                self.send_json(200, store.page(base, path, listed_with_approvals, page, size))
                return
            match = CONTENT_PATH.match(path)
            if not match:
                raise ContentError(404, 20404, "The requested resource was not found")
            sid, approvals = match.group(1), match.group(2)
            if method == "POST" and not sid:
                try:
                    request = json.loads(body or b"{}")
                except ValueError:
                    raise ContentError(400, 20001, "the body must be JSON") from None
                self.send_json(201, store.create(request).resource(base))
            elif method == "POST" and approvals == "/ApprovalRequests/whatsapp":
                try:
                    request = json.loads(body or b"{}")
                except ValueError:
                    raise ContentError(400, 20001, "the body must be JSON") from None
                self.send_json(201, store.request_approval(sid, request))
            elif method == "GET" and sid and approvals == "/ApprovalRequests":
                self.send_json(200, store.approval_of(sid, base))
            elif method == "GET" and sid and not approvals:
                self.send_json(200, store.get(sid).resource(base))
            elif method == "DELETE" and sid and not approvals:
                store.delete(sid)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                raise ContentError(405, 20004, "Method not allowed")
        except ContentError as error:
            self.send_json(
                error.status, {"code": error.code, "message": str(error), "status": error.status}
            )

    # -- media ---------------------------------------------------------------------------------

    def _media(self, fake: FakeTwilio, match: re.Match) -> None:
        """A MediaUrl: only with the account's credentials, answered by a redirect to a
        short-lived URL, as with "Enforce HTTP Auth on Media URLs"."""
        with fake.lock:
            fake.media_requests.append(self.path)
        if not fake.authorised(match.group(1), self.headers.get("Authorization")):
            self.send_json(*_unauthorised())
            return
        with fake.lock:
            found = fake.media.get(match.group(3))
        if found is None:
            self.send_json(404, {"code": 20404, "message": "The requested resource was not found"})
            return
        token = secrets.token_urlsafe(24)
        with fake.lock:
            fake.cdn[token] = (match.group(3), time.time() + CDN_URL_SECONDS)
        self.send_response(307)
        self.send_header("Location", f"{fake.url}/fake/cdn/{token}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _cdn(self, fake: FakeTwilio, token: str) -> None:
        with fake.lock:
            media_sid, expires = fake.cdn.get(token, ("", 0.0))
            found = fake.media.get(media_sid)
        if found is None or expires < time.time():
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data, content_type = found
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


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
        "status": message.status if listed else "queued",
        "num_segments": "1",
        "num_media": str(len(message.media_urls)),
        "direction": "outbound-api",
        "api_version": "2010-04-01",
        "date_created": created,
        "date_updated": created,
        "date_sent": created if listed else None,
        "price": None,
        "error_code": int(message.error_code) if listed and message.error_code else None,
        "error_message": None,
        "uri": f"/2010-04-01/Accounts/{message.account_sid}/Messages/{message.sid}.json",
        "subresource_uris": {},
    }


class FakeTwilio(FakeServer):
    """Twilio's Messages and Content APIs on loopback, for one account (SID and auth token)."""

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
        self._holds: List[threading.Event] = []
        #: Set once a message held by AFTER_CREATE_HOLD exists; answers wait for ``release``.
        self.holding = threading.Event()
        self.release = threading.Event()
        #: Post signed status callbacks ("sent", then "delivered" or a scripted failure) to each
        #: message's StatusCallback URL, as Twilio does. Off unless asked for.
        self.send_status_callbacks = False
        self._delivery_failures: Dict[str, Tuple[str, str]] = {}
        self.callback_answers: List[Tuple[str, str, int]] = []
        self.content = ContentStore(account_sid)
        #: WhatsApp address -> when the customer last wrote (opens the 24-hour window).
        self.whatsapp_inbound: Dict[str, float] = {}
        #: WhatsApp addresses with no WhatsApp account (sends fail with 63024).
        self.not_on_whatsapp: Set[str] = set()
        #: Media of inbound messages: ME sid -> (bytes, content type); redirect tokens.
        self.media: Dict[str, Tuple[bytes, str]] = {}
        self.cdn: Dict[str, Tuple[str, float]] = {}
        self.media_requests: List[str] = []
        #: Inbound messages delivered to a webhook: (url, form, status, answer body).
        self.deliveries: List[Tuple[str, Dict[str, str], int, str]] = []

    # -- WhatsApp --------------------------------------------------------------------------------

    def customer_wrote(self, address: str, at: Optional[float] = None) -> None:
        """``address`` (``whatsapp:+1…``) wrote to us at ``at``: the window is open 24 hours."""
        with self.lock:
            self.whatsapp_inbound[address] = time.time() if at is None else at

    def window_open(self, address: str) -> bool:
        with self.lock:
            wrote = self.whatsapp_inbound.get(address)
        return wrote is not None and time.time() - wrote < WINDOW_SECONDS

    def age_window(self, address: str, hours: float) -> None:
        """Moves the customer's last message ``hours`` into the past (a day passes)."""
        with self.lock:
            if address in self.whatsapp_inbound:
                self.whatsapp_inbound[address] -= hours * 3600

    def add_media(self, data: bytes, content_type: str) -> str:
        """Stores inbound media and returns its ``MediaUrl``, as Twilio hands it over."""
        media_sid = "ME" + secrets.token_hex(16)
        message_sid = "MM" + secrets.token_hex(16)
        with self.lock:
            self.media[media_sid] = (data, content_type)
        return (
            f"{self.url}/2010-04-01/Accounts/{self.account_sid}/Messages/{message_sid}"
            f"/Media/{media_sid}"
        )

    def deliver_inbound(self, url: str, form: Dict[str, str]) -> Tuple[int, str]:
        """Posts an inbound message webhook to ``url``, signed, as Twilio does (a WhatsApp
        sender's window opens first); returns the HTTP status and the answer's body."""
        sender = form.get("From", "")
        if sender.startswith(WHATSAPP):
            self.customer_wrote(sender)
        request = urllib.request.Request(
            url,
            data=urllib.parse.urlencode(form).encode(),
            headers={
                "X-Twilio-Signature": RequestValidator(self.auth_token).compute_signature(
                    url, form
                ),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, text = answer.status, answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode("utf-8", "replace")
        with self.lock:
            self.deliveries.append((url, dict(form), status, text))
        return status, text

    def create_message(
        self, account_sid: str, params: Dict[str, List[str]], headers
    ) -> SentMessage:
        """A message creation as Twilio decides it (raises ContentError for a 4xx)."""

        def one(name: str) -> Optional[str]:
            values = params.get(name)
            return values[0] if values else None

        to = one("To") or ""
        if not to:
            raise ContentError(400, 21604, "A 'To' phone number is required.")
        if to in self.opted_out or to.removeprefix(WHATSAPP) in self.opted_out:
            raise ContentError(400, 21610, "Attempt to send to unsubscribed recipient")
        whatsapp = to.startswith(WHATSAPP)
        sender = one("From")
        if whatsapp and sender and not sender.startswith(WHATSAPP):
            raise ContentError(400, 63007, "Twilio could not find a Channel with the From address")
        content_sid = one("ContentSid")
        variables = ContentStore.variables_of(one("ContentVariables"))
        if variables and not content_sid:
            raise ContentError(400, 21654, "ContentVariables given without a ContentSid")
        body = one("Body") or ""
        media = params.get("MediaUrl") or []
        content = self.content.get(content_sid) if content_sid else None
        options: List[str] = []
        if content is not None:
            body = content.rendered(variables)
            definition = content.types[content.content_type]
            media = list(definition.get("media") or [])
            options = [
                str(choice.get("title") or choice.get("item"))
                for choice in definition.get("actions") or definition.get("items") or []
            ]
        if whatsapp:
            media = media[:1]  # one attachment per WhatsApp message; Twilio drops the rest
        if not body and not media and content is None:
            raise ContentError(400, 21602, "Message body is required.")
        message = SentMessage(
            sid=("MM" if media else "SM") + secrets.token_hex(16),
            account_sid=account_sid,
            to=to,
            body=body,
            from_=sender,
            messaging_service_sid=one("MessagingServiceSid"),
            media_urls=list(media),
            status_callback=one("StatusCallback"),
            idempotency_token=headers.get("I-Twilio-Idempotency-Token"),
            content_sid=content_sid,
            content_variables=variables,
            options=options,
        )
        if whatsapp:
            failure = self._whatsapp_failure(to, content)
            if failure:
                message.status, message.error_code = "failed", failure
        with self.lock:
            self.messages.append(message)
        return message

    def _whatsapp_failure(self, to: str, content: Optional[Content]) -> Optional[str]:
        """The error a WhatsApp message fails with after its creation, as Twilio reports it
        by status callback: 63024 for a number not on WhatsApp, 63016 for anything but an
        approved template outside the window (or a session-only type), None when it goes."""
        if to in self.not_on_whatsapp:
            return "63024"
        if self.window_open(to):
            definition = content.types[content.content_type] if content is not None else {}
            if (
                content is not None
                and content.content_type == "twilio/quick-reply"
                and not content.approved
                and len(definition.get("actions") or ()) > SESSION_QUICK_REPLIES
            ):
                return "63016"
            return None
        if content is None or not content.approved or content.content_type in SESSION_ONLY:
            return "63016"
        return None

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
        """Create the next ``count`` messages, then answer HTTP 500 (``AFTER_CREATE_500``),
        drop the connection (``AFTER_CREATE_DROP``) or hold the answer until :attr:`release`
        is set (``AFTER_CREATE_HOLD``, :attr:`holding` tells when: a test kills the sender at
        that moment): the caller cannot know they were sent."""
        if how not in (AFTER_CREATE_500, AFTER_CREATE_DROP, AFTER_CREATE_HOLD):
            raise ValueError(f"unknown failure after creation: {how}")
        with self.lock:
            self._after_create.extend([how] * count)

    def hold_after_create(self) -> threading.Event:
        """Create the next message, then hold the answer until the returned event is set (or a
        minute passes): the sender is left waiting with its message already created."""
        release = threading.Event()
        with self.lock:
            self._holds.append(release)
        return release

    def next_hold(self) -> Optional[threading.Event]:
        with self.lock:
            return self._holds.pop(0) if self._holds else None

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
        """Twilio's status callbacks for ``message``, signed with the auth token: sent, then
        delivered (and read, on WhatsApp), or the failure."""
        callback = message.status_callback
        if not callback:
            return
        with self.lock:
            failure = self._delivery_failures.get(message.to)
        if message.error_code:
            statuses: List[Tuple[str, Optional[str]]] = [(message.status, message.error_code)]
        elif failure:
            statuses = [("sent", None), failure]
        else:
            statuses = [("sent", None), ("delivered", None)]
            if message.channel == "whatsapp":
                statuses.append(("read", None))
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
