"""Where a person can answer (omnichannel/handoff/reach.py)."""

from __future__ import annotations

import pytest

from omnichannel.handoff.reach import reach
from omnichannel.identity import ContactProfile
from omnichannel.settings import Settings

pytestmark = pytest.mark.unit

TWILIO = {
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "token",
    "TWILIO_PHONE_NUMBER": "+15005550006",
}


def test_sms_and_chat_by_what_is_known_and_allowed() -> None:
    settings = Settings.from_env(TWILIO)
    texter = ContactProfile("c1", phone="+14155550123", channels={"sms": 1.0})
    found = reach(texter, settings, "sms")
    assert found.available == ("sms",) and found.default == "sms"
    assert "never used the web chat" in found.unavailable["chat"]

    both = ContactProfile("c2", phone="+14155550123", user_id="u1", channels={"voice": 1.0})
    assert reach(both, settings, "voice").default == "sms", "a caller is answered by text"
    assert reach(both, settings, "chat").default == "chat"

    opted_out = ContactProfile("c3", phone="+14155550123", user_id="u1", sms_opted_out=True)
    found = reach(opted_out, settings, "voice")
    assert found.available == ("chat",) and found.default == "chat"
    assert "opted out" in found.unavailable["sms"]


def test_nobody_can_be_reached_without_a_phone_or_a_chat() -> None:
    anonymous_caller = ContactProfile("c4", channels={"voice": 1.0})
    found = reach(anonymous_caller, Settings.from_env(TWILIO), "voice")
    assert not found.reachable and found.default is None
    no_twilio = reach(ContactProfile("c5", phone="+14155550123"), Settings.from_env({}), "sms")
    assert "Twilio" in no_twilio.unavailable["sms"] and not no_twilio.reachable


def test_whatsapp_for_customers_who_wrote_there() -> None:
    settings = Settings.from_env(TWILIO)
    writer = ContactProfile("c6", phone="+14155550123", channels={"whatsapp": 2.0, "sms": 1.0})
    found = reach(writer, settings, "whatsapp")
    assert found.available == ("sms", "whatsapp") and found.default == "whatsapp"
    assert reach(writer, settings, "voice").default == "sms", "a caller is told: by text"

    texter = ContactProfile("c7", phone="+14155550123", channels={"sms": 1.0})
    assert "never written to us on WhatsApp" in reach(texter, settings, "sms").unavailable[
        "whatsapp"
    ]
    stopped = ContactProfile(
        "c8", phone="+14155550123", channels={"whatsapp": 1.0}, sms_opted_out=True
    )
    found = reach(stopped, settings, "whatsapp")
    assert not found.reachable
    assert "opted out" in found.unavailable["whatsapp"]
