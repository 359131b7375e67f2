"""The viewer's request bodies and its token check, on bytes and strings."""

from __future__ import annotations

import json

import pytest

from connectors.viewer.auth import is_authorised
from connectors.viewer.wire import BadQuery, parse_query

pytestmark = pytest.mark.unit


def parse(body: object) -> object:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_query(raw, page_events=50, max_page_events=100)


def test_a_phone_search_is_normalised_and_defaults_to_a_page() -> None:
    query = parse({"phone": "(415) 555-0123"})
    assert str(query.address) == "tel:+14155550123"
    assert query.searched_phone == "+14155550123"
    assert (query.before, query.limit, query.conversation_id) == (None, 50, None)


def test_user_and_conversation_searches_reveal_no_phone() -> None:
    user = parse({"user_id": "alice", "before": 10, "limit": 100})
    assert str(user.address) == "user:alice" and user.searched_phone is None
    assert (user.before, user.limit) == (10, 100)
    conversation = parse({"conversation_id": "c_abc123"})
    assert conversation.conversation_id == "c_abc123" and conversation.address is None


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"not json", "must be JSON"),
        ([1], "JSON object"),
        ({}, "exactly one"),
        ({"phone": "+14155550123", "user_id": "a"}, "exactly one"),
        ({"phone": "12"}, "phone number"),
        ({"phone": 4155550123}, "non-empty string"),
        ({"conversation_id": "c/../x"}, "conversation_id"),
        ({"user_id": "a", "limit": 101}, "between 1 and 100"),
        ({"user_id": "a", "limit": 0}, "between 1 and 100"),
        ({"user_id": "a", "before": -1}, "0 or more"),
        ({"user_id": "a", "before": "3"}, "whole number"),
        ({"user_id": "a", "token": "x"}, "unknown field"),
    ],
)
def test_bad_queries_say_why(body: object, reason: str) -> None:
    with pytest.raises(BadQuery, match=reason):
        parse(body)


def test_only_the_auth_token_as_a_bearer_token_is_accepted() -> None:
    assert is_authorised("Bearer s3cret", "s3cret")
    assert is_authorised("bearer  s3cret ", "s3cret")
    assert not is_authorised("Bearer s3cre", "s3cret")
    assert not is_authorised("s3cret", "s3cret")
    assert not is_authorised(None, "s3cret")
    assert not is_authorised("Bearer ", "s3cret")
