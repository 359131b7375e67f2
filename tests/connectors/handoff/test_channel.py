"""The ``handoff`` channel's options (credentials.yml) configure the process's engine; bad
options stop start-up naming the section and the key, as every connector's do."""

from __future__ import annotations

import pytest

from connectors.handoff.channel import SECTION, HandoffInput
from connectors.handoff.engine import handoff_engine
from connectors.inbox.channel import InboxInput
from omnichannel.errors import ConfigError


def test_options_reach_the_waiting_rules(redis_url: str) -> None:
    HandoffInput.from_credentials(
        {"withdraw_intents": ["deny", "goodbye"], "answer_intents": [], "min_confidence": 0.9}
    )
    try:
        policy = handoff_engine().policy
        assert policy.withdraw_intents == frozenset({"deny", "goodbye"})
        assert policy.answer_intents == frozenset() and policy.min_confidence == 0.9
    finally:
        HandoffInput.from_credentials({})  # the process's engine back to its defaults


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"min_confidence": 2}, "min_confidence"),
        ({"withdraw_intent": ["deny"]}, "withdraw_intent: unknown option"),
        ({"sweep_seconds": 0}, "sweep_seconds"),
    ],
)
def test_bad_options_stop_start_up(redis_url: str, options: dict, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"{SECTION}.*{problem}"):
        HandoffInput.from_credentials(options)


def test_the_inbox_needs_its_own_key(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.delenv("INBOX_JWT_SECRET", raising=False)
    with pytest.raises(ConfigError, match="INBOX_JWT_SECRET"):
        InboxInput.from_credentials({})
    monkeypatch.setenv("INBOX_JWT_SECRET", "k" * 40)
    monkeypatch.setenv("WEBCHAT_JWT_SECRET", "k" * 40)
    with pytest.raises(ConfigError, match="must differ from WEBCHAT_JWT_SECRET"):
        InboxInput.from_credentials({})
    monkeypatch.setenv("WEBCHAT_JWT_SECRET", "w" * 40)
    with pytest.raises(ConfigError, match="page_events"):
        InboxInput.from_credentials({"page_events": 0})
    assert InboxInput.from_credentials({"queue_limit": 50}).options.queue_limit == 50
