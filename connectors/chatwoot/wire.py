"""Chatwoot's webhook payloads as we read them: typed, bounded, no Sanic and no Rasa.

Chatwoot posts the same JSON to an API inbox's webhook URL, to account webhooks and to agent
bots (``app/listeners/webhook_listener.rb``, ``agent_bot_listener.rb`` of chatwoot/chatwoot):

- **message events** (``message_created``, ``message_updated``): the message's
  ``Message#webhook_data``: ``id``, ``content``, ``message_type`` (``incoming`` / ``outgoing``
  / ``activity`` / ``template``; a number, 0-3, inside ``conversation.messages[]``),
  ``private`` (an internal note), ``source_id`` (the id its creator gave it: ours start with
  :data:`OUR_SOURCE_PREFIX`), ``sender`` (``{id, name, type}``: ``user`` for an agent,
  ``contact``, ``agent_bot``…), ``conversation`` (the conversation's ``webhook_data``),
  ``inbox`` ``{id, name}``, ``account`` ``{id, name}``;
- **conversation events** (``conversation_created``, ``conversation_status_changed``,
  ``conversation_updated``; for agent bots also ``conversation_opened`` /
  ``conversation_resolved``): the conversation's ``webhook_data`` itself: ``id`` (its display
  id, the number in Chatwoot's URLs and API paths), ``inbox_id``, ``status`` (``open``,
  ``resolved``, ``pending``, ``snoozed``), ``meta.assignee`` (``{id, name, type}`` or null),
  ``changed_attributes`` (``[{"status": {"previous_value": …, "current_value": …}}, …]``,
  ``BaseListener#extract_changed_attributes``). ``conversation_updated`` fires when one of
  ``Conversation#list_of_keys`` changed (``assignee_id``, ``status``, ``team_id``, …): an
  assignment is one whose ``changed_attributes`` name ``assignee_id``.

Anything else is kept out: a payload is parsed only after its signature was checked
(:mod:`.auth`), and only the fields above are read, each bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, FrozenSet, Mapping, Optional

from omnichannel import bounded_json

MESSAGE_CREATED = "message_created"
MESSAGE_UPDATED = "message_updated"
CONVERSATION_CREATED = "conversation_created"
CONVERSATION_STATUS_CHANGED = "conversation_status_changed"
CONVERSATION_UPDATED = "conversation_updated"
CONVERSATION_OPENED = "conversation_opened"
CONVERSATION_RESOLVED = "conversation_resolved"
MESSAGE_EVENTS = frozenset({MESSAGE_CREATED, MESSAGE_UPDATED})
CONVERSATION_EVENTS = frozenset(
    {
        CONVERSATION_CREATED,
        CONVERSATION_STATUS_CHANGED,
        CONVERSATION_UPDATED,
        CONVERSATION_OPENED,
        CONVERSATION_RESOLVED,
    }
)

INCOMING = "incoming"
OUTGOING = "outgoing"
#: ``message_type`` as a number (``conversation.messages[]``, the messages API) → its name.
MESSAGE_TYPES = {0: INCOMING, 1: OUTGOING, 2: "activity", 3: "template"}

OPEN = "open"
RESOLVED = "resolved"
PENDING = "pending"
SNOOZED = "snoozed"
STATUSES = frozenset({OPEN, RESOLVED, PENDING, SNOOZED})

#: ``sender.type`` of an agent (a Chatwoot user).
AGENT_SENDER = "user"
#: Every message we post carries a ``source_id`` starting so: its webhook is our own echo.
OUR_SOURCE_PREFIX = "omni:"

#: Chatwoot keeps a message's content up to 150,000 characters; we read no more.
MAX_CONTENT_CHARS = 150_000
MAX_NAME_CHARS = 255
MAX_ID = 2**63 - 1


class BadPayload(ValueError):
    """The body is not a Chatwoot webhook payload we can read; the message says why."""


@dataclass(frozen=True)
class Person:
    """Someone in Chatwoot: an agent (``type`` ``user``), a contact, a bot."""

    id: int
    name: str
    type: str


@dataclass(frozen=True)
class Message:
    id: int
    content: str
    message_type: str
    private: bool
    source_id: Optional[str]
    sender: Optional[Person]
    attachments: int

    @property
    def is_ours(self) -> bool:
        return bool(self.source_id and self.source_id.startswith(OUR_SOURCE_PREFIX))


@dataclass(frozen=True)
class WebhookEvent:
    """One webhook delivery, as much of it as we act on."""

    event: str
    account_id: Optional[int]
    inbox_id: Optional[int]
    #: The conversation's display id (Chatwoot's URLs and API paths use it).
    conversation_id: Optional[int]
    status: Optional[str]
    assignee: Optional[Person]
    #: Names of the conversation's attributes this change touched (``changed_attributes``).
    changed: FrozenSet[str]
    message: Optional[Message] = None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _id(value: Any) -> Optional[int]:
    """A Chatwoot id: a positive integer (some payloads give it as a string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.isdigit() and len(value) <= 19:
        value = int(value)
    return value if isinstance(value, int) and 0 < value <= MAX_ID else None


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _person(raw: Any) -> Optional[Person]:
    raw = _mapping(raw)
    person_id = _id(raw.get("id"))
    if person_id is None:
        return None
    name = _text(raw.get("available_name"), MAX_NAME_CHARS) or _text(
        raw.get("name"), MAX_NAME_CHARS
    )
    return Person(person_id, name.strip(), _text(raw.get("type"), 40))


def message_type(value: Any) -> str:
    """``message_type`` as a name, whether Chatwoot sent its name or its number."""
    if isinstance(value, str) and value in MESSAGE_TYPES.values():
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return MESSAGE_TYPES.get(value, "")
    return ""


def _changed(raw: Any) -> FrozenSet[str]:
    names: set[str] = set()
    for entry in raw if isinstance(raw, list) else ():
        if isinstance(entry, Mapping):
            names.update(str(key)[:60] for key in list(entry)[:20])
        if len(names) > 50:
            break
    return frozenset(names)


def _status(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value in STATUSES else None


def parse_event(body: bytes) -> WebhookEvent:
    """The webhook ``body`` (JSON) as a :class:`WebhookEvent`; raises BadPayload."""
    try:
        raw = bounded_json.loads(body)
    except bounded_json.TooDeep as error:
        raise BadPayload(str(error)) from None
    except (UnicodeDecodeError, ValueError):
        raise BadPayload("the body is not JSON") from None
    if not isinstance(raw, Mapping):
        raise BadPayload("the body is not a JSON object")
    event = raw.get("event")
    if not isinstance(event, str) or not event or len(event) > 60:
        raise BadPayload("no event named")
    account_id = _id(_mapping(raw.get("account")).get("id"))
    if event in MESSAGE_EVENTS:
        conversation = _mapping(raw.get("conversation"))
        message_id = _id(raw.get("id"))
        if message_id is None:
            raise BadPayload("a message event without the message's id")
        attachments = raw.get("attachments")
        message = Message(
            id=message_id,
            content=_text(raw.get("content"), MAX_CONTENT_CHARS),
            message_type=message_type(raw.get("message_type")),
            private=raw.get("private") is True,
            source_id=_text(raw.get("source_id"), 200) or None,
            sender=_person(raw.get("sender")),
            attachments=len(attachments) if isinstance(attachments, list) else 0,
        )
        return WebhookEvent(
            event=event,
            account_id=account_id,
            inbox_id=_id(_mapping(raw.get("inbox")).get("id")) or _id(conversation.get("inbox_id")),
            conversation_id=_id(conversation.get("id")),
            status=_status(conversation.get("status")),
            assignee=_person(_mapping(conversation.get("meta")).get("assignee")),
            changed=frozenset(),
            message=message,
        )
    return WebhookEvent(
        event=event,
        account_id=account_id,
        inbox_id=_id(raw.get("inbox_id")) or _id(_mapping(raw.get("inbox")).get("id")),
        conversation_id=_id(raw.get("id")) if event in CONVERSATION_EVENTS else None,
        status=_status(raw.get("status")),
        assignee=_person(_mapping(raw.get("meta")).get("assignee")),
        changed=_changed(raw.get("changed_attributes")),
    )
