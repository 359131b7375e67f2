"""The chatwoot section of credentials.yml: typed, bounded, and never without a webhook check."""

from __future__ import annotations

import pytest

from connectors.chatwoot.options import SECTION, ChatwootOptions
from omnichannel.errors import ConfigError

pytestmark = pytest.mark.unit

BASE = {
    "url": "https://chatwoot.example.com",
    "account_id": "3",
    "inbox_id": "12",
    "api_access_token": "tok-en",
}


def test_values_from_the_environment_are_typed_and_secrets_kept_out_of_reprs() -> None:
    options = ChatwootOptions.parse(SECTION, {**BASE, "webhook_secret": "s3cret"})
    assert (options.account_id, options.inbox_id) == (3, 12)
    assert (
        options.secret("webhook_secret") == "s3cret"
        and options.secret("webhook_url_secret") is None
    )
    assert "tok-en" not in repr(options) and "s3cret" not in repr(options)


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({}, "webhook_secret"),
        ({"webhook_url_secret": "short"}, "at least 32"),
        ({"webhook_secret": "s", "on_resolve": "close"}, "hand_back or resolve"),
        ({"webhook_secret": "s", "api_access_token": "  "}, "is empty"),
        ({"webhook_secret": "s", "url": "not a url"}, "url"),
        ({"webhook_secret": "s", "sync_budget_seconds": 60}, "sync_budget_seconds"),
        ({"webhook_secret": "s", "transcript_message": 5}, "unknown option"),
    ],
)
def test_a_section_that_cannot_work_stops_start_up(changes: dict, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        ChatwootOptions.parse(SECTION, {**BASE, **changes})


def test_old_chatwoot_works_with_a_secret_url_alone() -> None:
    options = ChatwootOptions.parse(SECTION, {**BASE, "webhook_url_secret": "x" * 32})
    assert options.webhook_secret is None
