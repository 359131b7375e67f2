"""Masking personal data (omnichannel/masking.py): phone numbers inside any text, identifiers and
conversation ids cut short."""

from __future__ import annotations

import pytest

from omnichannel.masking import mask, mask_conversation_id, mask_identifier

pytestmark = pytest.mark.unit


def test_mask_hides_phone_numbers_inside_text() -> None:
    text = (
        "From=whatsapp:+14155552671, callback (415) 555-2671 or 415.555.2671; "
        "UK +44 20 7946 0958; order 12345; sid SM0123456789abcdef0123456789abcdef"
    )
    masked = mask(text)
    assert "whatsapp:+1415***2671" in masked
    assert "+44***0958" not in masked and "+4420***0958" in masked
    for digits in ["5552671", "555-2671", "555.2671", "7946 0958"]:
        assert digits not in masked
    assert "order 12345" in masked
    assert "SM0123456789abcdef0123456789abcdef" in masked
    assert mask("no numbers here") == "no numbers here"


def test_identifiers_and_conversation_ids_are_cut_short() -> None:
    assert mask_identifier("abcdef", 2) == "ab***"
    assert mask_identifier("abc", 4) == "a***"  # never more than half
    assert mask_conversation_id("+14155552671") == "+141…71"
    assert mask_conversation_id("c_1") == "c_1"
