"""The notification request (connectors/notifications/wire.py) and who may send one
(connectors/notifications/auth.py): pure logic."""

from __future__ import annotations

import json
import time

import pytest

from connectors.notifications.auth import idempotency_problem, is_backend
from connectors.notifications.state import item_id_of
from connectors.notifications.wire import BadRequest, body_digest, parse_request

pytestmark = pytest.mark.unit

NOW = time.time()


def body(**changes: object) -> bytes:
    request = {
        "customer": {"phone": "+14155552671"},
        "response": "utter_order_shipped",
        "slots": {"order_number": "40213"},
    }
    request.update(changes)
    return json.dumps(request).encode()


def test_a_request_parses() -> None:
    parsed = parse_request(body(send_at="2026-12-08T09:00:00Z"), NOW)
    assert parsed.customer.phone == "+14155552671" and parsed.slots == {"order_number": "40213"}
    assert parsed.send_at is not None and parsed.send_at.tzinfo is not None


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"not json", "JSON object"),
        (b"[]", "JSON object"),
        (body(customer={}), "exactly one"),
        (body(customer={"phone": "+14155552671", "user_id": "u"}), "exactly one"),
        (body(response="say_hi"), "response"),
        (body(extra=1), "extra"),
        (body(slots={"order_number": {"nested": 1}}), "slots"),
        (body(slots={f"s{i}": "v" for i in range(21)}), "at most 20 slots"),
        (body(slots={"order_number": "x" * 300}), "256"),
        (body(send_at="2026-12-08T09:00:00"), "time zone"),
        (body(send_at="2099-01-01T00:00:00Z"), "30 days"),
        (body(consent={"source": ""}), "consent"),
    ],
)
def test_bad_requests_get_a_short_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_request(raw, NOW)
    assert reason in str(refused.value) and len(str(refused.value)) <= 200


def test_the_same_body_is_the_same_whatever_its_spacing_and_key_order() -> None:
    spaced = b'{ "slots": {"order_number": "40213"}, "response": "utter_order_shipped",\n'
    spaced += b' "customer": {"phone": "+14155552671"} }'
    assert body_digest(spaced) == body_digest(body())
    assert body_digest(body(slots={"order_number": "1"})) != body_digest(body())


def test_only_the_notifications_key_authenticates() -> None:
    assert is_backend("Bearer s3cret-key", "s3cret-key")
    assert is_backend("bearer s3cret-key", "s3cret-key")
    for header in (None, "", "Bearer", "Basic s3cret-key", "Bearer other", "s3cret-key"):
        assert not is_backend(header, "s3cret-key")
    assert not is_backend("Bearer ", "")


def test_idempotency_keys() -> None:
    assert idempotency_problem("order-40213-shipped") is None
    assert "required" in str(idempotency_problem(None))
    for bad in ("short", "x" * 129, "has space here", "ünïcode-key"):
        assert idempotency_problem(bad) is not None


def test_a_key_stands_for_one_notification_id() -> None:
    assert item_id_of("order-40213-shipped") == item_id_of("order-40213-shipped")
    assert item_id_of("order-40213-shipped") != item_id_of("order-40214-shipped")
    assert item_id_of("order-40213-shipped").startswith("o_")
