"""Redaction: Luhn-checked card numbers, emails, the business's patterns, and its settings."""

from __future__ import annotations

import json

import pytest

from omnichannel.errors import ConfigError
from omnichannel.redaction import CARD_MARK, EMAIL_MARK, ORIGINAL, Redactor, luhn_valid

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "card",
    ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "378282246310005",
     "6011 0009 9013 9424", "4000056655665556"],
)
def test_card_numbers_as_people_type_them_are_redacted(card: str) -> None:
    assert Redactor().redact(f"pay with {card}, thanks") == f"pay with {CARD_MARK}, thanks"


@pytest.mark.parametrize(
    "text",
    [
        "order 4111111111111112 please",  # fails the Luhn check
        "call me on +1 415 555 0100",  # a phone number: too few digits
        "order 55555",
        "tracking 1Z999AA10123456784",  # glued to letters: an id, not a card
        "12345678901234567890123",  # too long for a card
    ],
)
def test_what_is_not_a_card_stays(text: str) -> None:
    assert Redactor().redact(text) == text


def test_luhn() -> None:
    assert luhn_valid("79927398713") and not luhn_valid("79927398710")


def test_emails_and_configured_patterns_are_redacted() -> None:
    patterns = {"iban": r"\bGB\d{2}[A-Z]{4}\d{14}\b", "pin": r"PIN \d{4}"}
    redactor = Redactor.from_env({"REDACT_PATTERNS": json.dumps(patterns)})
    text = "mail jane.doe+shop@example.co.uk, IBAN GB82WEST12345698765432, PIN 1234"
    assert redactor.redact(text) == f"mail {EMAIL_MARK}, IBAN [iban], [pin]"


def test_settings_are_checked_at_start_up() -> None:
    assert Redactor.from_env({}).redacts_event_log
    assert Redactor.from_env({"EVENT_LOG_TEXT": "original"}).event_log_text == ORIGINAL
    with pytest.raises(ConfigError, match="EVENT_LOG_TEXT"):
        Redactor.from_env({"EVENT_LOG_TEXT": "everything"})
    with pytest.raises(ConfigError, match="JSON object"):
        Redactor.from_env({"REDACT_PATTERNS": "[1]"})
    with pytest.raises(ConfigError, match="does not compile"):
        Redactor.from_env({"REDACT_PATTERNS": '{"bad": "("}'})
    with pytest.raises(ConfigError, match="name"):
        Redactor.from_env({"REDACT_PATTERNS": '{"Bad Name": "x"}'})
