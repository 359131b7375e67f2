"""Chatwoot's webhook payloads, as Chatwoot's WebhookListener builds them, read into events."""

from __future__ import annotations

import json

import pytest

from connectors.chatwoot.wire import (
    CONVERSATION_STATUS_CHANGED,
    CONVERSATION_UPDATED,
    MESSAGE_CREATED,
    BadPayload,
    message_type,
    parse_event,
)

pytestmark = pytest.mark.unit

CONVERSATION = {
    "additional_attributes": {},
    "can_reply": True,
    "channel": "Channel::Api",
    "contact_inbox": {"contact_id": 3, "inbox_id": 7, "source_id": "0b7a…"},
    "id": 42,
    "inbox_id": 7,
    "messages": [{"id": 9, "message_type": 1, "content": "hi"}],
    "meta": {
        "sender": {"id": 3, "name": "Customer", "type": "contact"},
        "assignee": {"id": 5, "name": "Alex", "available_name": "Alex A.", "type": "user"},
        "team": None,
    },
    "status": "open",
}


def message_payload(**changes) -> bytes:
    payload = {
        "event": "message_created",
        "id": 901,
        "content": "Your parcel left the depot.",
        "created_at": "2026-12-07T10:00:00.000Z",
        "message_type": "outgoing",
        "content_type": "text",
        "private": False,
        "content_attributes": {},
        "source_id": None,
        "sender": {"id": 5, "name": "Alex", "avatar_url": "", "type": "user"},
        "inbox": {"id": 7, "name": "Hand-offs"},
        "conversation": CONVERSATION,
        "account": {"id": 1, "name": "Acme"},
        **changes,
    }
    return json.dumps(payload).encode()


def test_an_agents_reply_is_read_with_its_conversation_and_sender() -> None:
    event = parse_event(message_payload())
    assert event.event == MESSAGE_CREATED
    assert (event.account_id, event.inbox_id, event.conversation_id) == (1, 7, 42)
    assert event.status == "open" and event.assignee.name == "Alex A."
    message = event.message
    assert (message.id, message.message_type, message.private) == (901, "outgoing", False)
    assert message.sender.type == "user" and not message.is_ours
    assert message.content == "Your parcel left the depot."


def test_our_own_posts_are_recognised_by_their_source_id() -> None:
    assert parse_event(message_payload(source_id="omni:abc:e12")).message.is_ours
    assert not parse_event(message_payload(source_id="WAID:123")).message.is_ours


def test_message_type_is_read_as_a_name_or_a_number() -> None:
    assert [message_type(v) for v in ("incoming", 0, 1, 2, 3, 7, True, None)] == [
        "incoming",
        "incoming",
        "outgoing",
        "activity",
        "template",
        "",
        "",
        "",
    ]
    assert parse_event(message_payload(message_type=0)).message.message_type == "incoming"


def test_a_status_change_names_the_conversation_and_what_changed() -> None:
    body = json.dumps(
        {
            **CONVERSATION,
            "status": "resolved",
            "event": "conversation_status_changed",
            "changed_attributes": [
                {"status": {"previous_value": "open", "current_value": "resolved"}}
            ],
        }
    ).encode()
    event = parse_event(body)
    assert event.event == CONVERSATION_STATUS_CHANGED
    assert (event.conversation_id, event.inbox_id, event.status) == (42, 7, "resolved")
    assert event.changed == {"status"} and event.message is None


def test_an_assignment_is_a_conversation_update_naming_assignee_id() -> None:
    body = json.dumps(
        {
            **CONVERSATION,
            "event": "conversation_updated",
            "changed_attributes": [{"assignee_id": {"previous_value": None, "current_value": 5}}],
        }
    ).encode()
    event = parse_event(body)
    assert event.event == CONVERSATION_UPDATED and "assignee_id" in event.changed
    assert event.assignee.id == 5


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b"{}", "no event"),
        (json.dumps({"event": "message_created", "id": "x"}).encode(), "message's id"),
        (b"\xff\xfe", "not JSON"),
        (b"[" * 70 + b"]" * 70, "nested deeper"),
    ],
)
def test_what_is_not_a_payload_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(BadPayload, match=reason):
        parse_event(body)


def test_fields_of_the_wrong_type_are_left_out_not_trusted() -> None:
    event = parse_event(
        message_payload(
            private="yes",
            sender={"id": True, "type": "user"},
            conversation={"id": -4, "status": "weird", "meta": "x"},
            inbox={"id": "7"},
            content={"html": "<b>"},
        )
    )
    assert event.message.private is False and event.message.sender is None
    assert event.conversation_id is None and event.status is None and event.assignee is None
    assert event.inbox_id == 7 and event.message.content == ""
