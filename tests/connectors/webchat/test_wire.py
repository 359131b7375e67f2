"""Client frames parsed at the edge (units: any input gives a frame or BadFrame), and bad frames
at an authenticated socket of the real stack, which answers each with an error and stays open."""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import sys
from collections import Counter
from typing import Any, Callable, Dict, Optional, Tuple

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


@pytest.mark.unit
def test_each_frame_type_parses_to_its_model() -> None:
    token = secrets.token_urlsafe(8)
    auth = parse_frame(json.dumps({"type": "auth", "token": token}))
    assert isinstance(auth, AuthFrame) and auth.token == token and auth.timezone is None
    zoned = parse_frame(json.dumps({"type": "auth", "token": token, "timezone": "Asia/Tokyo"}))
    assert isinstance(zoned, AuthFrame) and zoned.timezone == "Asia/Tokyo"
    assert isinstance(parse_frame('{"type": "message", "id": "abcdefgh", "text": "hi"}'), TextFrame)
    button = parse_frame('{"type": "button", "id": "abcdefgh", "payload": "/greet"}')
    assert isinstance(button, ButtonFrame) and button.title == ""
    assert parse_frame('{"type": "history", "before": 3}') == HistoryFrame(type="history", before=3)
    assert parse_frame('{"type": "ping"}') == PingFrame(type="ping")


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["[]", "{}", "1", "null", "true", '["message"]', '{"a": 1}'])
def test_a_type_field_of_the_wrong_json_type_is_a_bad_frame(kind: str) -> None:
    error = bad(f'{{"type": {kind}, "id": "abcdefgh", "text": "hi"}}')
    assert error.code == "bad_frame" and "unknown frame type" in str(error)
    assert error.frame_id == "abcdefgh"


@pytest.mark.unit
@pytest.mark.parametrize("data", ["[1, 2]", '"auth"', "42", "null", "true", "[]"])
def test_json_that_is_not_an_object_is_a_bad_frame(data: str) -> None:
    error = bad(data)
    assert (error.code, str(error)) == ("bad_frame", "frame must be a JSON object")


@pytest.mark.unit
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


@pytest.mark.unit
def test_numbers_too_large_or_not_finite_are_bad_frames() -> None:
    too_many_digits = '{"type": "history", "before": ' + "9" * 5000 + "}"
    assert str(bad(too_many_digits)) == "frame is not valid JSON"
    for number in ("1e999", "-1e999", "NaN", "Infinity"):
        error = bad(f'{{"type": "history", "before": {number}}}')
        assert error.code == "bad_frame" and "before" in str(error), number
    assert "limit" in str(bad('{"type": "history", "before": 1, "limit": 1e308}'))
    huge = parse_frame('{"type": "history", "before": ' + "9" * 300 + "}")
    assert isinstance(huge, HistoryFrame) and huge.before == int("9" * 300)


@pytest.mark.unit
def test_other_inputs_are_bad_frames_too() -> None:
    assert "binary" in str(bad(b"\x00\x01"))
    for data in (None, 5, ["{}"], {"type": "ping"}):
        assert bad(data).code == "bad_frame"
    assert bad("x" * (MAX_FRAME_BYTES + 1)).code == "frame_too_large"
    assert bad("é" * (MAX_FRAME_BYTES // 2 + 1)).code == "frame_too_large"  # bytes, not chars
    assert bad('"\\ud800"').code == "bad_frame"  # a JSON string of a lone surrogate
    # A raw lone surrogate cannot be encoded as UTF-8; its size is still measured, no error.
    assert parse_frame('{"type": "ping", "id": "\ud800"}') == PingFrame(type="ping", id="\ud800")


#: The protocol of docs/INTEGRATORS.md ("Web chat protocol"), written out independently of the
#: parser: for each frame type, each field's check and whether it is required.
_PROTOCOL: Dict[str, Dict[str, Tuple[Callable[[Any], bool], bool]]] = {
    "auth": {
        "token": (lambda v: isinstance(v, str) and 1 <= len(v) <= 8192, True),
        "timezone": (
            lambda v: (
                v is None or (isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_+/-]{1,64}", v))
            ),
            False,
        ),
    },
    "message": {
        "id": (lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_-]{8,64}", v), True),
        "text": (lambda v: isinstance(v, str) and 1 <= len(v) <= 4000, True),
    },
    "button": {
        "id": (lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_-]{8,64}", v), True),
        "payload": (lambda v: isinstance(v, str) and 1 <= len(v) <= 4000, True),
        "title": (lambda v: isinstance(v, str) and len(v) <= 4000, False),
    },
    "history": {
        "before": (lambda v: type(v) is int and v >= 0, True),
        "limit": (lambda v: v is None or (type(v) is int and 1 <= v <= 200), False),
    },
    "ping": {"id": (lambda v: v is None or (isinstance(v, str) and len(v) <= 64), False)},
}


def expected_verdict(frame: Dict[str, Any]) -> Optional[str]:
    """What the protocol says of ``frame``: None when it is a valid frame, else the reason
    class ("unknown frame type" or "invalid <type> frame")."""
    kind = frame.get("type")
    if not isinstance(kind, str) or kind not in _PROTOCOL:
        return "unknown frame type"
    fields = _PROTOCOL[kind]
    for name, value in frame.items():
        if name == "type":
            continue
        if name not in fields or not fields[name][0](value):
            return f"invalid {kind} frame"
    if any(required and name not in frame for name, (_, required) in fields.items()):
        return f"invalid {kind} frame"
    return None


@pytest.mark.unit
def test_random_json_frames_get_the_answer_the_protocol_gives() -> None:
    """Whatever JSON object a client sends, the parser answers as the protocol says: the frame
    with its fields as sent when it is valid, else BadFrame naming the problem and the frame's
    id when it has a short string id; never another exception."""
    rng = random.Random(20240611)
    leaves = [None, True, False, 0, -1, 1, 1.5, 10**30, "", "auth", "message", "abcdefgh", "x" * 70]

    def value(depth: int) -> Any:
        roll = rng.random()
        if depth > 4 or roll < 0.5:
            return rng.choice(leaves)
        if roll < 0.75:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["type", "id", "text", "x"]): value(depth + 1) for _ in range(2)}

    fields = ["type", "id", "text", "token", "payload", "title", "before", "limit", "extra"]
    verdicts: Counter = Counter()
    for _ in range(3000):
        frame = {name: value(0) for name in rng.sample(fields, rng.randint(0, 5))}
        if rng.random() < 0.7:
            frame["type"] = rng.choice(["auth", "message", "button", "history", "ping", "x"])
        if rng.random() < 0.3:  # often enough, a frame that is all right
            frame = valid_frame(rng)
        data = json.dumps(frame)
        expected = expected_verdict(frame)
        verdicts[expected or "valid"] += 1
        sent_id = frame.get("id")
        short_id = sent_id if isinstance(sent_id, str) and len(sent_id) <= 64 else None
        assert frame_id(data) == short_id
        if expected is None:
            parsed = parse_frame(data)
            assert parsed.dict(exclude_unset=True) == frame, frame
        else:
            error = bad(data)
            assert error.code == "bad_frame" and str(error).startswith(
                "unknown frame type" if expected == "unknown frame type" else expected
            ), (frame, str(error))
            assert error.frame_id == short_id, frame
    # The run covers every answer, not only errors.
    assert verdicts["valid"] > 500 and verdicts["unknown frame type"] > 300
    assert all(verdicts[f"invalid {kind} frame"] > 50 for kind in _PROTOCOL), verdicts


def valid_frame(rng: random.Random) -> Dict[str, Any]:
    """A random frame the protocol allows, optional fields sometimes left out."""
    client_id = "".join(rng.choice("abcXYZ019_-") for _ in range(rng.randint(8, 64)))
    text = "".join(rng.choice("héllo wörld 12") for _ in range(rng.randint(1, 60)))
    frames = [
        {"type": "auth", "token": text},
        {"type": "message", "id": client_id, "text": text},
        {"type": "button", "id": client_id, "payload": "/" + text, "title": text[:9]},
        {"type": "button", "id": client_id, "payload": "/greet"},
        {"type": "history", "before": rng.randint(0, 10**6), "limit": rng.randint(1, 200)},
        {"type": "history", "before": 0},
        {"type": "ping", "id": text[:64]},
        {"type": "ping"},
    ]
    return rng.choice(frames)


@pytest.mark.unit
def test_frame_id_names_only_a_short_string_id() -> None:
    assert frame_id('{"id": "abcdefgh"}') == "abcdefgh"
    assert frame_id(json.dumps({"id": "x" * 65})) is None
    assert frame_id('{"id": 5}') is None and frame_id("[1]") is None and frame_id(b"{}") is None


@pytest.mark.unit
def test_ready_names_the_channel_labels() -> None:
    ready = ready_frame("c_1", "user:al***", {"max_text_chars": 4000}, LABELS)
    assert ready["channels"] == {
        "voice": "Voice",
        "sms": "SMS",
        "whatsapp": "WhatsApp",
        "chat": "Chat",
    }


async def answer_within_the_rate_limit(ws: Any, data: Any, kind: str) -> Dict[str, Any]:
    """Sends ``data`` and returns the answer of type ``kind``; a frame the session's rate limit
    dropped is sent again once its ``retry_after`` has passed (this test is about bad frames,
    and sends more of them than the limit's burst)."""
    while True:
        await ws.send(data)
        answer = await recv_until(ws, lambda f: f["type"] in (kind, "error"))
        if answer.get("code") != "rate_limited":
            assert answer["type"] == kind, answer
            return answer
        await asyncio.sleep(answer["retry_after"])


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
        error = await answer_within_the_rate_limit(chat.ws, data, "error")
        assert error["code"] == code and words in error["message"], (number, error)
        ping = json.dumps({"type": "ping", "id": f"p{number}"})
        assert await answer_within_the_rate_limit(chat.ws, ping, "pong") == {
            "type": "pong",
            "id": f"p{number}",
        }
    assert tracker_events(rasa_stack, chat.conversation_id) == []
    hello = json.dumps({"type": "message", "id": secrets.token_hex(8), "text": "hello"})
    assert (await answer_within_the_rate_limit(chat.ws, hello, "ack"))["duplicate"] is False
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
