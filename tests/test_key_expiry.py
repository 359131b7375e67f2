"""Every Redis key the running assistant writes has an expiry.

Collected after ``test_full_story.py`` and the channel tests, so it scans the shared stack's
Redis once calls, texts, chats, call reports, hand-offs and forms have all written their keys.
A key without an expiry is a leak that grows with every visitor.
"""

from __future__ import annotations

from collections import Counter

import pytest
import redis

pytestmark = pytest.mark.rasa_server


def _shape(key: bytes) -> str:
    """The key with its ids elided, so the failure message groups keys by kind."""
    parts = key.decode("utf-8", "replace").split(":")
    return ":".join("{…}" if part.startswith("{") else part for part in parts[:5])


def test_every_key_of_the_stack_expires(rasa_stack, stack_redis) -> None:
    with redis.Redis.from_url(stack_redis.url) as client:
        keys = list(client.scan_iter(count=1000))
        without_expiry = Counter(_shape(key) for key in keys if client.pttl(key) == -1)
    assert len(keys) > 50, "the scan should follow the story and channel tests"
    assert not without_expiry, f"keys without an expiry, by kind: {dict(without_expiry)}"
