"""A local stand-in for Chatwoot: the part of its Application API the Chatwoot desk calls, and its
webhooks, signed the way Chatwoot signs them.

It follows Chatwoot's documented API (swagger/paths/application/ of chatwoot/chatwoot, the
jbuilder views the controllers answer with) for one account with one API inbox:

- every ``/api/v1/accounts/{account_id}/…`` request needs the header ``api_access_token``
  (``Authorization: Bearer`` too, as newer Chatwoot allows); without it: 401 ``{"error": "You
  need to sign in or sign up before continuing."}``; an unknown record: 404 ``{"error":
  "Resource could not be found"}``; a failed validation: 422 ``{"message": …, "attributes":
  […]}``;
- ``POST /contacts`` (identifier unique per account) → ``{"payload": {"contact", "contact_inbox":
  {"inbox", "source_id"}}}``; ``GET /contacts/search?q=``; ``POST /contacts/{id}/contact_inboxes``;
  ``GET /contacts/{id}/conversations``;
- ``POST /conversations`` → the conversation (``id`` = display id); ``POST
  /conversations/{id}/toggle_status``; ``POST /conversations/{id}/messages`` (``source_id`` kept;
  an ``incoming`` message on a resolved conversation reopens it); ``GET
  /conversations/{id}/messages[?before=]`` → the 20 latest (before ``before``), oldest first.

Webhooks go to the inbox's webhook URL as Chatwoot's ``WebhookListener`` builds them
(``Message#webhook_data``, ``Conversation#webhook_data``), each signed when ``signing`` is on
(Chatwoot >= 4.13): ``X-Chatwoot-Signature: sha256=<HMAC-SHA256(secret, "{timestamp}.{body}")>``,
``X-Chatwoot-Timestamp``, ``X-Chatwoot-Delivery`` (a UUID). What our own API calls cause (our
messages' ``message_created``, status changes) is delivered in the background, as Sidekiq
would; what agents do (:meth:`FakeChatwoot.agent_reply`, :meth:`~FakeChatwoot.agent_note`,
:meth:`~FakeChatwoot.assign`, :meth:`~FakeChatwoot.resolve`) is delivered at once and returns our
server's answer. Tests also send what Chatwoot would not: :meth:`~FakeChatwoot.replay` (a
delivery sent again), a bad signature or an old timestamp (:meth:`~FakeChatwoot.deliver`'s
overrides), and script failures of the API (:meth:`~FakeChatwoot.fail_next`,
:meth:`~FakeChatwoot.fail_after_create`, :meth:`~FakeChatwoot.hold`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Tuple

from testkit.fake_http import FakeServer, JsonHandler

UNAUTHORISED = {"error": "You need to sign in or sign up before continuing."}
NOT_FOUND = {"error": "Resource could not be found"}
#: ``message_type`` as Chatwoot stores it.
MESSAGE_TYPES = {"incoming": 0, "outgoing": 1, "activity": 2, "template": 3}
MESSAGES_PAGE = 20
#: After creating a record: answer HTTP 500, or close the connection without an answer.
AFTER_CREATE_500 = "500"
AFTER_CREATE_DROP = "drop"

_ACCOUNT_PATH = re.compile(r"^/api/v1/accounts/(\d+)(/.*)$")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``X-Chatwoot-Signature`` as Chatwoot computes it (chatwoot/chatwoot pull 13573)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


@dataclass
class Agent:
    """A Chatwoot user (an agent)."""

    id: int
    name: str

    def push_event_data(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "available_name": self.name,
            "avatar_url": "",
            "type": "user",
            "availability_status": "online",
            "thumbnail": "",
        }

    def webhook_data(self) -> Dict[str, Any]:
        return {"id": self.id, "name": self.name, "avatar_url": "", "type": "user"}


@dataclass
class Contact:
    id: int
    name: str
    identifier: Optional[str]
    phone_number: Optional[str]
    email: Optional[str]
    additional_attributes: Dict[str, Any]
    #: source_id → inbox id
    sessions: Dict[str, int] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)

    def push_event_data(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "identifier": self.identifier,
            "phone_number": self.phone_number,
            "email": self.email,
            "additional_attributes": self.additional_attributes,
            "custom_attributes": {},
            "thumbnail": "",
            "type": "contact",
        }


@dataclass
class Message:
    id: int
    conversation: int
    content: str
    message_type: str
    private: bool
    source_id: Optional[str]
    sender: Dict[str, Any]
    content_type: str = "text"
    created_at: float = field(default_factory=time.time)

    def resource(self, inbox_id: int) -> Dict[str, Any]:
        """``api/v1/models/_message.json.jbuilder``."""
        return {
            "id": self.id,
            "content": self.content,
            "inbox_id": inbox_id,
            "conversation_id": self.conversation,
            "message_type": MESSAGE_TYPES[self.message_type],
            "content_type": self.content_type,
            "status": "sent",
            "content_attributes": {},
            "created_at": int(self.created_at),
            "private": self.private,
            "source_id": self.source_id,
            "sender": self.sender,
        }


@dataclass
class Conversation:
    id: int
    inbox_id: int
    contact_id: int
    source_id: str
    status: str
    additional_attributes: Dict[str, Any]
    assignee: Optional[Agent] = None
    messages: List[Message] = field(default_factory=list)
    created_at: float = field(default_factory=time.time)


@dataclass
class Answer:
    """How our server answered one webhook delivery."""

    event: str
    status: int
    body: Any
    headers: Dict[str, str]
    payload: bytes


class _Handler(JsonHandler):
    def _route(self, method: str) -> None:
        fake: FakeChatwoot = self.server.fake  # type: ignore[attr-defined]
        path, _, query = self.path.partition("?")
        body = self.read_body() if method == "POST" else b""
        match = _ACCOUNT_PATH.match(path)
        if not match:
            self.send_json(404, NOT_FOUND)
            return
        if not fake.authorised(self.request_headers()):
            self.send_json(401, UNAUTHORISED)
            return
        if int(match.group(1)) != fake.account_id:
            self.send_json(401, {"error": "You are not authorized to access this account"})
            return
        try:
            params = json.loads(body) if body else {}
        except ValueError:
            self.send_json(400, {"error": "malformed JSON"})
            return
        if not isinstance(params, dict):
            self.send_json(400, {"error": "malformed JSON"})
            return
        query_params = dict(urllib.parse.parse_qsl(query))
        fake.handle(self, method, match.group(2), params, query_params)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        self._route("POST")


class FakeChatwoot(FakeServer):
    """Chatwoot's Application API and webhooks for one account with one API inbox."""

    handler_class = _Handler

    def __init__(
        self,
        *,
        account_id: int = 1,
        inbox_id: int = 7,
        access_token: Optional[str] = None,
        webhook_secret: Optional[str] = None,
        signing: bool = True,
        port: int = 0,
    ) -> None:
        super().__init__(port)
        self.account_id = account_id
        self.inbox_id = inbox_id
        self.access_token = access_token or secrets.token_urlsafe(24)
        self.webhook_secret = webhook_secret or secrets.token_urlsafe(24)
        #: Sign webhooks (Chatwoot >= 4.13's API inboxes); off: as older Chatwoot, unsigned.
        self.signing = signing
        #: Where the inbox's webhooks go (the API inbox's webhook URL).
        self.webhook_url: Optional[str] = None
        self.contacts: Dict[int, Contact] = {}
        self.conversations: Dict[int, Conversation] = {}
        self.requests: List[Tuple[str, str]] = []
        self.answers: List[Answer] = []
        self._ids = {"contact": 0, "conversation": 0, "message": 0}
        self._failures: List[Tuple[Optional[str], int]] = []
        self._after_create: List[Tuple[str, str]] = []
        self._holds: Dict[str, threading.Event] = {}
        self.held = threading.Event()
        # An answer to a caller that died meanwhile (a replica killed mid-request) is expected.
        self._httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.agents = {1: Agent(1, "Alex Agent"), 2: Agent(2, "Sam Senior")}

    # -- the API --------------------------------------------------------------------------------

    def authorised(self, headers: Dict[str, str]) -> bool:
        token = headers.get("api_access_token", "")
        bearer = headers.get("authorization", "")
        if bearer.startswith("Bearer "):
            token = token or bearer[7:]
        return bool(token) and hmac.compare_digest(token, self.access_token)

    def _next_id(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def handle(
        self,
        handler: _Handler,
        method: str,
        path: str,
        params: Dict[str, Any],
        query: Dict[str, str],
    ) -> None:
        routes = [
            ("POST", r"/contacts", "create_contact"),
            ("GET", r"/contacts/search", "search_contacts"),
            ("POST", r"/contacts/(\d+)/contact_inboxes", "create_contact_inbox"),
            ("GET", r"/contacts/(\d+)/conversations", "contact_conversations"),
            ("POST", r"/conversations", "create_conversation"),
            ("POST", r"/conversations/(\d+)/messages", "create_message"),
            ("GET", r"/conversations/(\d+)/messages", "list_messages"),
            ("POST", r"/conversations/(\d+)/toggle_status", "toggle_status"),
        ]
        for verb, pattern, operation in routes:
            match = re.fullmatch(pattern, path)
            if verb != method or not match:
                continue
            with self.lock:
                self.requests.append((operation, path))
            failure = self._next_failure(operation)
            if failure:
                handler.send_json(
                    failure,
                    {"error": "Internal Server Error"}
                    if failure >= 500
                    else {"error": "Retry later"},
                )
                return
            gate = self._holds.get(operation)
            if gate is not None:
                self.held.set()
                gate.wait(60)
            with self.lock:
                status, answer, after = getattr(self, "_" + operation)(
                    *[int(g) for g in match.groups()], params=params, query=query
                )
            how = self._next_after_create(operation) if status == 200 else None
            if how == AFTER_CREATE_DROP:
                handler.close_connection = True
            elif how == AFTER_CREATE_500:
                handler.send_json(500, {"error": "Internal Server Error"})
            else:
                handler.send_json(status, answer)
            for payload in after:
                self._deliver_later(payload)
            return
        handler.send_json(404, NOT_FOUND)

    def _inbox(self) -> Dict[str, Any]:
        return {"id": self.inbox_id, "name": "Assistant hand-offs", "channel_type": "Channel::Api"}

    def _contact_resource(self, contact: Contact) -> Dict[str, Any]:
        """``api/v1/models/_contact.json.jbuilder`` with its contact inboxes."""
        return {
            **contact.push_event_data(),
            "availability_status": "offline",
            "created_at": int(contact.created_at),
            "contact_inboxes": [
                {"source_id": source_id, "inbox": self._inbox()}
                for source_id, inbox_id in contact.sessions.items()
                if inbox_id == self.inbox_id
            ],
        }

    def _create_contact(self, *, params: Dict[str, Any], **_: Any) -> Tuple[int, Any, list]:
        identifier = params.get("identifier") or None
        if identifier and any(c.identifier == identifier for c in self.contacts.values()):
            return (
                422,
                {"message": "Identifier has already been taken", "attributes": ["identifier"]},
                [],
            )
        inbox_id = params.get("inbox_id")
        if inbox_id is not None and inbox_id != self.inbox_id:
            return 404, NOT_FOUND, []
        contact = Contact(
            id=self._next_id("contact"),
            name=str(params.get("name") or ""),
            identifier=identifier,
            phone_number=params.get("phone_number"),
            email=params.get("email"),
            additional_attributes=dict(params.get("additional_attributes") or {}),
        )
        source_id = None
        if inbox_id is not None:
            source_id = str(uuid.uuid4())
            contact.sessions[source_id] = inbox_id
        self.contacts[contact.id] = contact
        return (
            200,
            {
                "payload": {
                    "contact": self._contact_resource(contact),
                    "contact_inbox": {
                        "inbox": self._inbox() if source_id else None,
                        "source_id": source_id,
                    },
                }
            },
            [],
        )

    def _search_contacts(self, *, query: Dict[str, str], **_: Any) -> Tuple[int, Any, list]:
        wanted = (query.get("q") or "").lower()
        found = [
            self._contact_resource(c)
            for c in self.contacts.values()
            if wanted
            and any(
                wanted in (value or "").lower()
                for value in (c.name, c.identifier, c.phone_number, c.email)
            )
        ][:15]
        return 200, {"meta": {"count": len(found), "current_page": 1}, "payload": found}, []

    def _create_contact_inbox(
        self, contact_id: int, *, params: Dict[str, Any], **_: Any
    ) -> Tuple[int, Any, list]:
        contact = self.contacts.get(contact_id)
        if contact is None:
            return 404, NOT_FOUND, []
        if params.get("inbox_id") != self.inbox_id:
            return 422, {"message": "Inbox is invalid", "attributes": ["inbox"]}, []
        source_id = str(params.get("source_id") or uuid.uuid4())
        if any(source_id in c.sessions for c in self.contacts.values()):
            return (
                422,
                {"message": "Source has already been taken", "attributes": ["source_id"]},
                [],
            )
        contact.sessions[source_id] = self.inbox_id
        return 200, {"source_id": source_id, "inbox": self._inbox()}, []

    def _conversation_data(self, conversation: Conversation) -> Dict[str, Any]:
        """``Conversation#webhook_data`` (Conversations::EventDataPresenter#push_data)."""
        contact = self.contacts[conversation.contact_id]
        chat = [m for m in conversation.messages if not m.private and m.message_type != "activity"]
        return {
            "additional_attributes": conversation.additional_attributes,
            "can_reply": True,
            "channel": "Channel::Api",
            "contact_inbox": {
                "contact_id": contact.id,
                "inbox_id": conversation.inbox_id,
                "source_id": conversation.source_id,
            },
            "id": conversation.id,
            "inbox_id": conversation.inbox_id,
            "messages": [chat[-1].resource(self.inbox_id)] if chat else [],
            "labels": [],
            "meta": {
                "sender": contact.push_event_data(),
                "assignee": conversation.assignee.push_event_data()
                if conversation.assignee
                else None,
                "team": None,
                "hmac_verified": False,
            },
            "status": conversation.status,
            "custom_attributes": {},
            "snoozed_until": None,
            "unread_count": 0,
            "priority": None,
            "waiting_since": 0,
            "agent_last_seen_at": 0,
            "contact_last_seen_at": 0,
            "timestamp": int(time.time()),
            "created_at": int(conversation.created_at),
            "account_id": self.account_id,
        }

    def _contact_conversations(self, contact_id: int, **_: Any) -> Tuple[int, Any, list]:
        if contact_id not in self.contacts:
            return 404, NOT_FOUND, []
        found = [
            self._conversation_data(c)
            for c in self.conversations.values()
            if c.contact_id == contact_id
        ]
        return 200, {"payload": found}, []

    def _create_conversation(self, *, params: Dict[str, Any], **_: Any) -> Tuple[int, Any, list]:
        source_id = params.get("source_id")
        contact = next((c for c in self.contacts.values() if source_id in c.sessions), None)
        if contact is None or not source_id:
            return 404, NOT_FOUND, []
        status = params.get("status") or "open"
        if status not in ("open", "resolved", "pending", "snoozed"):
            return (
                422,
                {"message": "Status is not included in the list", "attributes": ["status"]},
                [],
            )
        conversation = Conversation(
            id=self._next_id("conversation"),
            inbox_id=contact.sessions[source_id],
            contact_id=contact.id,
            source_id=source_id,
            status=status,
            additional_attributes=dict(params.get("additional_attributes") or {}),
        )
        self.conversations[conversation.id] = conversation
        data = self._conversation_data(conversation)
        return 200, data, [{**data, "event": "conversation_created"}]

    def _create_message(
        self, conversation_id: int, *, params: Dict[str, Any], **_: Any
    ) -> Tuple[int, Any, list]:
        conversation = self.conversations.get(conversation_id)
        if conversation is None:
            return 404, NOT_FOUND, []
        message_type = params.get("message_type") or "outgoing"
        if message_type not in ("incoming", "outgoing"):
            return 422, {"message": "Message type is not included in the list"}, []
        contact = self.contacts[conversation.contact_id]
        sender = (
            contact.push_event_data()
            if message_type == "incoming"
            else {"id": 99, "name": "Assistant integration", "type": "user"}
        )
        message = Message(
            id=self._next_id("message"),
            conversation=conversation.id,
            content=str(params.get("content") or ""),
            message_type=message_type,
            private=params.get("private") is True,
            source_id=params.get("source_id"),
            sender=sender,
        )
        conversation.messages.append(message)
        after = [self._message_webhook(message, conversation)]
        if message_type == "incoming" and conversation.status in ("resolved", "snoozed"):
            after.append(self._status_change(conversation, "open"))
        return 200, message.resource(self.inbox_id), after

    def _list_messages(
        self, conversation_id: int, *, query: Dict[str, str], **_: Any
    ) -> Tuple[int, Any, list]:
        conversation = self.conversations.get(conversation_id)
        if conversation is None:
            return 404, NOT_FOUND, []
        before = int(query["before"]) if query.get("before", "").isdigit() else None
        found = [m for m in conversation.messages if before is None or m.id < before]
        page = [m.resource(self.inbox_id) for m in found[-MESSAGES_PAGE:]]
        contact = self.contacts[conversation.contact_id]
        return (
            200,
            {"meta": {"contact": contact.push_event_data(), "labels": []}, "payload": page},
            [],
        )

    def _toggle_status(
        self, conversation_id: int, *, params: Dict[str, Any], **_: Any
    ) -> Tuple[int, Any, list]:
        conversation = self.conversations.get(conversation_id)
        if conversation is None:
            return 404, NOT_FOUND, []
        status = params.get("status") or ("resolved" if conversation.status == "open" else "open")
        after = [] if status == conversation.status else [self._status_change(conversation, status)]
        payload = {"success": True, "conversation_id": conversation.id, "current_status": status}
        return 200, {"meta": {}, "payload": payload}, after

    # -- webhooks -------------------------------------------------------------------------------

    def _message_webhook(self, message: Message, conversation: Conversation) -> Dict[str, Any]:
        """``Message#webhook_data`` + ``event``."""
        return {
            "event": "message_created",
            "id": message.id,
            "content": message.content,
            "created_at": _iso(message.created_at),
            "message_type": message.message_type,
            "content_type": message.content_type,
            "private": message.private,
            "content_attributes": {},
            "source_id": message.source_id,
            "sender": message.sender,
            "inbox": {"id": self.inbox_id, "name": self._inbox()["name"]},
            "conversation": self._conversation_data(conversation),
            "account": {"id": self.account_id, "name": "Acme Shop"},
        }

    def _status_change(self, conversation: Conversation, status: str) -> Dict[str, Any]:
        previous, conversation.status = conversation.status, status
        return {
            **self._conversation_data(conversation),
            "event": "conversation_status_changed",
            "changed_attributes": [
                {"status": {"previous_value": previous, "current_value": status}}
            ],
        }

    def request_for(
        self,
        payload: Dict[str, Any],
        *,
        secret: Optional[str] = None,
        timestamp: Optional[int] = None,
        delivery: Optional[str] = None,
        url: Optional[str] = None,
    ) -> urllib.request.Request:
        """The POST Chatwoot makes for ``payload`` (signed unless ``signing`` is off)."""
        body = json.dumps(payload).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.signing:
            stamp = str(int(time.time()) if timestamp is None else timestamp)
            headers["X-Chatwoot-Timestamp"] = stamp
            headers["X-Chatwoot-Signature"] = sign(secret or self.webhook_secret, stamp, body)
            headers["X-Chatwoot-Delivery"] = delivery or str(uuid.uuid4())
        target = url or self.webhook_url
        if not target:
            raise RuntimeError("the fake Chatwoot has no webhook URL")
        return urllib.request.Request(target, data=body, headers=headers, method="POST")

    def send(self, request: urllib.request.Request, event: str = "") -> Answer:
        """Posts one delivery to our server and records its answer."""
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                status, raw = reply.status, reply.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        except OSError:
            status, raw = 0, b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        answer = Answer(
            event,
            status,
            body,
            dict(request.header_items()),
            request.data or b"",  # type: ignore[arg-type]
        )
        with self.lock:
            self.answers.append(answer)
        return answer

    def deliver(self, payload: Dict[str, Any], **overrides: Any) -> Answer:
        """Delivers ``payload`` now (``secret``, ``timestamp``, ``delivery``, ``url``: what to
        send instead of Chatwoot's own, for the tests of what must be refused)."""
        return self.send(self.request_for(payload, **overrides), str(payload.get("event")))

    def replay(self, answer: Answer) -> Answer:
        """Sends an earlier delivery again, byte for byte (its signature, timestamp and id)."""
        headers = {k: v for k, v in answer.headers.items()}
        request = urllib.request.Request(
            self.webhook_url or "", data=answer.payload, headers=headers, method="POST"
        )
        return self.send(request, answer.event)

    def _deliver_later(self, payload: Dict[str, Any]) -> None:
        if self.webhook_url:
            threading.Thread(target=self.deliver, args=(payload,), daemon=True).start()

    # -- what agents do in Chatwoot ------------------------------------------------------------

    def agent_reply(
        self, conversation_id: int, text: str, agent_id: int = 1, private: bool = False
    ) -> Answer:
        """An agent answers (``private``: writes a note) in the conversation."""
        with self.lock:
            conversation = self.conversations[conversation_id]
            message = Message(
                id=self._next_id("message"),
                conversation=conversation_id,
                content=text,
                message_type="outgoing",
                private=private,
                source_id=None,
                sender=self.agents[agent_id].webhook_data(),
            )
            conversation.messages.append(message)
            payload = self._message_webhook(message, conversation)
        return self.deliver(payload)

    def agent_note(self, conversation_id: int, text: str, agent_id: int = 1) -> Answer:
        return self.agent_reply(conversation_id, text, agent_id, private=True)

    def assign(self, conversation_id: int, agent_id: int = 1) -> Answer:
        """The conversation is assigned to an agent (``conversation_updated``)."""
        with self.lock:
            conversation = self.conversations[conversation_id]
            previous = conversation.assignee.id if conversation.assignee else None
            conversation.assignee = self.agents[agent_id]
            payload = {
                **self._conversation_data(conversation),
                "event": "conversation_updated",
                "changed_attributes": [
                    {"assignee_id": {"previous_value": previous, "current_value": agent_id}}
                ],
            }
        return self.deliver(payload)

    def resolve(self, conversation_id: int, status: str = "resolved") -> Answer:
        """An agent resolves the conversation (``conversation_status_changed``)."""
        with self.lock:
            payload = self._status_change(self.conversations[conversation_id], status)
        return self.deliver(payload)

    # -- scripted failures -----------------------------------------------------------------------

    def fail_next(self, status: int = 500, count: int = 1, operation: Optional[str] = None) -> None:
        """Answer the next ``count`` calls (of ``operation``, e.g. ``create_message``; any when
        None) with HTTP ``status`` (429: Rack::Attack's "Retry later")."""
        with self.lock:
            self._failures.extend([(operation, status)] * count)

    def _next_failure(self, operation: str) -> Optional[int]:
        with self.lock:
            for position, (wanted, status) in enumerate(self._failures):
                if wanted in (None, operation):
                    del self._failures[position]
                    return status
        return None

    def fail_after_create(
        self, operation: str, how: str = AFTER_CREATE_500, count: int = 1
    ) -> None:
        """The next ``count`` ``operation`` calls do their work, then answer 500 or drop the
        connection: the caller cannot know it was done."""
        with self.lock:
            self._after_create.extend([(operation, how)] * count)

    def _next_after_create(self, operation: str) -> Optional[str]:
        with self.lock:
            for position, (wanted, how) in enumerate(self._after_create):
                if wanted == operation:
                    del self._after_create[position]
                    return how
        return None

    def hold(self, operation: str) -> threading.Event:
        """Calls of ``operation`` wait (``held`` is set when one arrives) until the returned
        event is set; then they do their work and answer (if anyone still listens)."""
        gate = threading.Event()
        self._holds[operation] = gate
        self.held.clear()
        return gate

    def release(self, operation: str) -> None:
        gate = self._holds.pop(operation, None)
        if gate is not None:
            gate.set()

    # -- reading ---------------------------------------------------------------------------------

    def conversation_of(self, identifier: str) -> List[Conversation]:
        """The conversations of the contact with ``identifier`` (our conversation id)."""
        with self.lock:
            contacts = [c.id for c in self.contacts.values() if c.identifier == identifier]
            return [c for c in self.conversations.values() if c.contact_id in contacts]

    def messages_of(self, conversation_id: int) -> List[Message]:
        with self.lock:
            return list(self.conversations[conversation_id].messages)

    def calls(self, operation: str) -> int:
        with self.lock:
            return sum(1 for name, _ in self.requests if name == operation)
