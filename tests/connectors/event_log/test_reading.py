"""Reading a log page by page (connectors/event_log/reading.py): the channel a bot event answered,
and the store found under Rasa's wrappers, or a configuration error naming who needs it."""

from __future__ import annotations

import pytest

from connectors.event_log.reading import event_log_of, next_turn_channel
from omnichannel.errors import ConfigError

pytestmark = pytest.mark.unit


def test_bot_events_answer_the_channel_of_the_user_turn_before_them() -> None:
    sms = {"event": "user", "input_channel": "twilio_sms"}
    assert next_turn_channel(sms, "chat") == "sms"
    assert next_turn_channel({"event": "bot", "metadata": {"channel": "voice"}}, "sms") == "sms"
    assert next_turn_channel({"event": "user"}, "voice") == "voice"  # unknown: unchanged


class _Log:
    async def read_events(self) -> list:  # pragma: no cover - found, never called
        return []

    async def event_count(self) -> int:  # pragma: no cover
        return 0


class _Wrapper:
    def __init__(self, inner: object) -> None:
        self._tracker_store = inner


class _Agent:
    def __init__(self, store: object) -> None:
        self.tracker_store = store


def test_the_store_is_found_under_rasas_wrappers() -> None:
    log = _Log()
    assert event_log_of(_Agent(_Wrapper(_Wrapper(log))), "the viewer") is log
    with pytest.raises(ConfigError, match="the viewer needs tracker_store type"):
        event_log_of(_Agent(_Wrapper(object())), "the viewer")
