"""What agents' pages may send (connectors/inbox/requests.py): known keys, bounded values, ids
that are ids (no trailing newline), JSON that is not too deep; frames likewise."""

from __future__ import annotations

import json

import pytest

from connectors.inbox.requests import (
    BadRequest,
    Claim,
    Preview,
    Reply,
    WatchFrame,
    parse_body,
    parse_frame,
)

pytestmark = pytest.mark.unit


def test_a_well_formed_reply() -> None:
    body = {"conversation_id": "c_x1", "message_id": "m" * 8, "channel": "sms", "text": "Hi"}
    reply = parse_body(Reply, json.dumps(body).encode())
    assert (reply.channel, reply.text) == ("sms", "Hi")
    assert parse_body(Claim, b'{"conversation_id": "c_x1", "take_over": true}').take_over


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "must be JSON"),
        (b"[]", "JSON object"),
        (b'{"conversation_id": "c_x1\\n", "take_over": false}', "conversation_id"),
        (b'{"conversation_id": "c x"}', "conversation_id"),
        (b'{"conversation_id": "c_x1", "admin": true}', "unknown field"),
        (b'{"conversation_id": "c_x1", "take_over": "yes please"}', "take_over"),
        (b'{"a": ' * 80 + b"1" + b"}" * 80, "deeper"),
    ],
)
def test_anything_else_is_refused_with_a_reason(body: bytes, problem: str) -> None:
    with pytest.raises(BadRequest, match=problem):
        parse_body(Claim, body)


def test_replies_go_by_sms_whatsapp_or_chat_with_an_id_the_page_chose() -> None:
    base = {"conversation_id": "c_x1", "message_id": "m" * 8, "text": "Hi"}
    for channel in ("sms", "whatsapp", "chat"):
        body = json.dumps({**base, "channel": channel}).encode()
        assert parse_body(Reply, body).channel == channel
    for channel in ("voice", "sms\n", "whatsapp:", "email"):
        with pytest.raises(BadRequest, match="channel"):
            parse_body(Reply, json.dumps({**base, "channel": channel}).encode())
    with pytest.raises(BadRequest, match="message_id"):
        parse_body(Reply, json.dumps({**base, "channel": "sms", "message_id": "short"}).encode())


def test_frames() -> None:
    assert parse_frame('{"type": "watch", "conversation_id": "c_x1"}') == WatchFrame(
        type="watch", conversation_id="c_x1"
    )
    for frame, problem in (
        ('{"type": "shout"}', "unknown frame type"),
        ('{"type": "auth\\n", "token": "t"}', "unknown frame type"),
        ('{"type": "watch", "conversation_id": "c_x1", "extra": 1}', "unknown field"),
        ("x" * 20_000, "larger than"),
    ):
        with pytest.raises(BadRequest, match=problem):
            parse_frame(frame)


def test_a_preview_may_name_its_conversation() -> None:
    plain = parse_body(Preview, b'{"channel": "whatsapp", "text": "Hi"}')
    assert plain.conversation_id is None
    named = b'{"channel": "whatsapp", "text": "Hi", "conversation_id": "c_x1"}'
    assert parse_body(Preview, named).conversation_id == "c_x1"
    with pytest.raises(BadRequest, match="conversation_id"):
        parse_body(Preview, b'{"channel": "sms", "text": "Hi", "conversation_id": "c x"}')
