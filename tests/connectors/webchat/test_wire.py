"""Client frames parsed at the edge (units: any input gives a frame or BadFrame), and bad frames
at an authenticated socket of the real stack, which answers each with an error and stays open."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import sys
from typing import Any

import pytest

from connectors.webchat.wire import (
    MAX_FRAME_BYTES,
    AuthFrame,
    BadFrame,
    ButtonFrame,
    HistoryFrame,
    PingFrame,
    TextFrame,
    frame_id,
    parse_frame,
    ready_frame,
)
from omnichannel.bounded_json import MAX_DEPTH, TooDeep
from omnichannel.channels import LABELS
from testkit.stack import RasaStack
from tests.connectors.webchat.helpers import (
    open_chat,
    recv_frame,
    recv_until,
    refused,
    tracker_events,
    user_token,
)


def bad(data: Any) -> BadFrame:
    with pytest.raises(BadFrame) as caught:
        parse_frame(data)
    return caught.value


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_each_frame_type_parses_to_its_model() -> None:
    token = secrets.token_urlsafe(8)
    auth = parse_frame(json.dumps({"type": "auth", "token": token}))
    assert isinstance(auth, AuthFrame) and auth.token == token
    assert isinstance(parse_frame('{"type": "message", "id": "abcdefgh", "text": "hi"}'), TextFrame)
    button = parse_frame('{"type": "button", "id": "abcdefgh", "payload": "/greet"}')
    assert isinstance(button, ButtonFrame) and button.title == ""
    assert parse_frame('{"type": "history", "before": 3}') == HistoryFrame(type="history", before=3)
    assert parse_frame('{"type": "ping"}') == PingFrame(type="ping")


@pytest.mark.parametrize("kind", ["[]", "{}", "1", "null", "true", '["message"]', '{"a": 1}'])
def test_a_type_field_of_the_wrong_json_type_is_a_bad_frame(kind: str) -> None:
    error = bad(f'{{"type": {kind}, "id": "abcdefgh", "text": "hi"}}')
    assert error.code == "bad_frame" and "unknown frame type" in str(error)
    assert error.frame_id == "abcdefgh"


@pytest.mark.parametrize("data", ["[1, 2]", '"auth"', "42", "null", "true", "[]"])
def test_json_that_is_not_an_object_is_a_bad_frame(data: str) -> None:
    error = bad(data)
    assert (error.code, str(error)) == ("bad_frame", "frame must be a JSON object")


def test_nesting_deeper_than_the_json_parser_goes_is_a_bad_frame() -> None:
    depth = (MAX_FRAME_BYTES - 100) // 2
    assert depth > sys.getrecursionlimit()  # the case that raised RecursionError
    for data in (
        nested(depth),
        '{"type": "message", "id": "abcdefgh", "text": ' + nested(depth) + "}",
        '{"type": ' + nested(depth) + "}",
    ):
        error = bad(data)
        assert (error.code, str(error)) == ("bad_frame", f"frame is {TooDeep(MAX_DEPTH)}")
    # Past the bound but within what the parser reads: refused the same way.
    error = bad('{"type": "message", "id": "abcdefgh", "text": ' + nested(500) + "}")
    assert (error.code, str(error)) == ("bad_frame", f"frame is {TooDeep(MAX_DEPTH)}")
    # Within the bound: an ordinary wrong field.
    error = bad('{"type": "message", "id": "abcdefgh", "text": ' + nested(MAX_DEPTH - 1) + "}")
    assert error.code == "bad_frame" and "text" in str(error)
    assert frame_id(nested(depth)) is None


def test_numbers_too_large_or_not_finite_are_bad_frames() -> None:
    too_many_digits = '{"type": "history", "before": ' + "9" * 5000 + "}"
    assert str(bad(too_many_digits)) == "frame is not valid JSON"
    for number in ("1e999", "-1e999", "NaN", "Infinity"):
        error = bad(f'{{"type": "history", "before": {number}}}')
        assert error.code == "bad_frame" and "before" in str(error), number
    assert "limit" in str(bad('{"type": "history", "before": 1, "limit": 1e308}'))
    huge = parse_frame('{"type": "history", "before": ' + "9" * 300 + "}")
    assert isinstance(huge, HistoryFrame) and huge.before == int("9" * 300)


def test_other_inputs_are_bad_frames_too() -> None:
    assert "binary" in str(bad(b"\x00\x01"))
    for data in (None, 5, ["{}"], {"type": "ping"}):
        assert bad(data).code == "bad_frame"
    assert bad("x" * (MAX_FRAME_BYTES + 1)).code == "frame_too_large"
    assert bad("é" * (MAX_FRAME_BYTES // 2 + 1)).code == "frame_too_large"  # bytes, not chars
    assert bad('"\\ud800"').code == "bad_frame"  # a JSON string of a lone surrogate
    # A raw lone surrogate cannot be encoded as UTF-8; its size is still measured, no error.
    assert parse_frame('{"type": "ping", "id": "\ud800"}') == PingFrame(type="ping", id="\ud800")


def test_parse_frame_is_total_on_random_json() -> None:
    """Whatever JSON a client sends, the answer is a frame or BadFrame, never another error."""
    rng = random.Random(20240611)
    leaves = [None, True, 0, -1, 1.5, 10**30, "", "auth", "message", "abcdefgh", "x" * 70]

    def value(depth: int) -> Any:
        roll = rng.random()
        if depth > 4 or roll < 0.5:
            return rng.choice(leaves)
        if roll < 0.75:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["type", "id", "text", "x"]): value(depth + 1) for _ in range(2)}

    fields = ["type", "id", "text", "token", "payload", "title", "before", "limit", "extra"]
    for _ in range(3000):
        frame = {name: value(0) for name in rng.sample(fields, rng.randint(0, 5))}
        if rng.random() < 0.7:
            frame["type"] = rng.choice(["auth", "message", "button", "history", "ping", "x"])
        try:
            parse_frame(json.dumps(frame))
        except BadFrame:
            pass
        frame_id(json.dumps(frame))


def test_frame_id_names_only_a_short_string_id() -> None:
    assert frame_id('{"id": "abcdefgh"}') == "abcdefgh"
    assert frame_id(json.dumps({"id": "x" * 65})) is None
    assert frame_id('{"id": 5}') is None and frame_id("[1]") is None and frame_id(b"{}") is None


def test_ready_names_the_channel_labels() -> None:
    ready = ready_frame("c_1", "user:al***", {"max_text_chars": 4000}, LABELS)
    assert ready["channels"] == {
        "voice": "Voice",
        "sms": "SMS",
        "whatsapp": "WhatsApp",
        "chat": "Chat",
    }


@pytest.mark.rasa_server
async def test_bad_frames_get_errors_and_the_socket_stays_usable(
    rasa_stack: RasaStack, secret: str
) -> None:
    chat = await open_chat(rasa_stack, user_token(secret, "bad-" + secrets.token_hex(4)))
    bad = [
        ("{not json", "bad_frame", "not valid JSON"),
        ("[1, 2]", "bad_frame", "JSON object"),
        (json.dumps({"type": "shout", "id": "abcdefgh"}), "bad_frame", "unknown frame type"),
        (json.dumps({"type": "message", "id": "abcdefgh"}), "bad_frame", "text"),
        (json.dumps({"type": "message", "id": "no", "text": "hi"}), "bad_frame", "id"),
        (
            json.dumps({"type": "message", "id": "abcdefgh", "text": "x" * 4001}),
            "bad_frame",
            "text",
        ),
        (
            json.dumps({"type": "message", "id": "abcdefgh", "text": "y" * 20000}),
            "frame_too_large",
            "16384",
        ),
        (b"\x00\x01binary", "bad_frame", "binary"),
        (json.dumps({"type": "auth", "token": "again"}), "bad_frame", "already authenticated"),
    ]
    for number, (data, code, words) in enumerate(bad):
        await chat.ws.send(data)
        error = await recv_until(chat.ws, lambda f: f["type"] == "error")
        assert error["code"] == code and words in error["message"], (number, error)
        await chat.ws.send(json.dumps({"type": "ping", "id": f"p{number}"}))
        assert await recv_until(chat.ws, lambda f: f["type"] == "pong") == {
            "type": "pong",
            "id": f"p{number}",
        }
        await asyncio.sleep(2.1)  # stay under the rate limit: this test is about bad frames
    assert tracker_events(rasa_stack, chat.conversation_id) == []
    await chat.say("hello")
    assert (await chat.next_bot())["buttons"]
    await chat.ws.close()


@pytest.mark.rasa_server
async def test_frames_of_the_wrong_shape_get_bad_frame_and_the_socket_stays_open(
    rasa_stack: RasaStack, secret: str
) -> None:
    """Valid JSON of the wrong shape once closed the socket with 1000 and logged a traceback."""
    code, reason = await refused(rasa_stack, '{"type": []}')
    assert code == 4401 and "unknown frame type" in reason
    chat = await open_chat(rasa_stack, user_token(secret, "shape-" + secrets.token_hex(4)))
    deep = '{"type": "message", "id": "abcdefgh", "text": ' + nested(7000) + "}"
    for number, data in enumerate(['{"type": []}', '{"type": {}}', deep]):
        await chat.ws.send(data)
        error = await recv_frame(chat.ws)
        assert error["type"] == "error" and error["code"] == "bad_frame", (number, error)
        await chat.ws.send(json.dumps({"type": "ping", "id": f"s{number}"}))
        assert await recv_frame(chat.ws) == {"type": "pong", "id": f"s{number}"}
    await chat.ws.close()
