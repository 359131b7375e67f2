"""The outbound decision (omnichannel/outbound/policy.py): pure logic, no Redis."""

from __future__ import annotations

from datetime import datetime, time, timezone

import pytest

from omnichannel.errors import ConfigError
from omnichannel.outbound.policy import (
    CUSTOMER_RATE_LIMIT,
    GLOBAL_RATE_LIMIT,
    HOLD,
    NO_ADDRESS,
    NO_CONSENT,
    OPTED_OUT,
    QUIET_HOURS,
    REFUSE,
    SEND,
    Facts,
    OutboundPolicy,
    QuietHours,
    RateLimits,
    decide,
    quiet_until,
    zones_of_phone,
)

pytestmark = pytest.mark.unit

POLICY = OutboundPolicy()
SAN_FRANCISCO = "+14155550100"
#: 18:00 UTC is 10:00 in San Francisco (December: UTC-8).
DAYTIME = datetime(2026, 12, 7, 18, 0, tzinfo=timezone.utc)
#: 06:00 UTC is 22:00 the evening before in San Francisco.
NIGHT = datetime(2026, 12, 7, 6, 0, tzinfo=timezone.utc)


def phone_facts(**changes: object) -> Facts:
    base = dict(channel="sms", contacted_by_phone=True, phone_zones=zones_of_phone(SAN_FRANCISCO))
    base.update(changes)
    return Facts(**base)  # type: ignore[arg-type]


def test_a_customer_who_texted_us_gets_a_text_in_the_daytime() -> None:
    assert decide(phone_facts(), POLICY, DAYTIME).verdict == SEND


def test_stop_refuses_on_every_phone_channel_whatever_else_holds() -> None:
    for channel in ("sms", "whatsapp", "voice"):
        decision = decide(
            phone_facts(channel=channel, opted_out=True, consent_record=True), POLICY, DAYTIME
        )
        assert (decision.verdict, decision.reason) == (REFUSE, OPTED_OUT)


def test_a_number_that_never_contacted_us_needs_the_business_consent_record() -> None:
    facts = phone_facts(contacted_by_phone=False)
    assert (decide(facts, POLICY, DAYTIME).verdict, decide(facts, POLICY, DAYTIME).reason) == (
        REFUSE,
        NO_CONSENT,
    )
    assert decide(
        phone_facts(contacted_by_phone=False, consent_record=True), POLICY, DAYTIME
    ).allowed
    assert decide(
        phone_facts(contacted_by_phone=False, customer_requested=True), POLICY, DAYTIME
    ).allowed


def test_no_phone_on_file_is_refused() -> None:
    assert decide(phone_facts(has_address=False), POLICY, DAYTIME).reason == NO_ADDRESS


def test_quiet_hours_hold_until_they_end_in_the_customers_time() -> None:
    decision = decide(phone_facts(), POLICY, NIGHT)
    assert (decision.verdict, decision.reason) == (HOLD, QUIET_HOURS)
    # 08:00 in San Francisco = 16:00 UTC.
    assert decision.not_before == datetime(2026, 12, 7, 16, 0, tzinfo=timezone.utc)


def test_the_conversations_own_zone_beats_the_numbers_region() -> None:
    # 06:00 UTC is 15:00 in Tokyo: a customer known to be there is not in quiet hours.
    assert decide(phone_facts(conversation_timezone="Asia/Tokyo"), POLICY, NIGHT).allowed


def test_a_chat_message_is_not_held_by_quiet_hours() -> None:
    assert decide(Facts(channel="chat", has_address=True), POLICY, NIGHT).allowed


def test_customer_requested_callbacks_are_not_held_by_quiet_hours() -> None:
    assert decide(phone_facts(channel="voice", customer_requested=True), POLICY, NIGHT).allowed


def test_rate_limits_refuse_for_the_customer_and_hold_for_the_business() -> None:
    limits = OutboundPolicy(limits=RateLimits(per_customer=2, global_count=10))
    assert decide(phone_facts(customer_sent=2), limits, DAYTIME).reason == CUSTOMER_RATE_LIMIT
    ends = datetime(2026, 12, 7, 18, 1, tzinfo=timezone.utc)
    held = decide(phone_facts(global_sent=10, global_window_ends=ends), limits, DAYTIME)
    assert (held.verdict, held.reason, held.not_before) == (HOLD, GLOBAL_RATE_LIMIT, ends)


def test_a_number_spanning_several_zones_waits_until_every_one_is_awake() -> None:
    hours = QuietHours(time(21, 0), time(8, 0))
    zones = ("America/New_York", "America/Los_Angeles")
    # 13:30 UTC: 08:30 in New York, 05:30 in Los Angeles.
    now = datetime(2026, 12, 7, 13, 30, tzinfo=timezone.utc)
    assert quiet_until(now, zones, hours, "UTC") == datetime(
        2026, 12, 7, 16, 0, tzinfo=timezone.utc
    )
    # 20:00 UTC: both awake.
    assert quiet_until(now.replace(hour=20), zones, hours, "UTC") is None


def test_unknown_region_falls_back_to_the_business_zone() -> None:
    policy = OutboundPolicy(default_timezone="Europe/Berlin")
    # 06:00 UTC = 07:00 in Berlin: quiet until 08:00 Berlin = 07:00 UTC.
    decision = decide(phone_facts(phone_zones=()), policy, NIGHT)
    assert decision.not_before == datetime(2026, 12, 7, 7, 0, tzinfo=timezone.utc)


def test_quiet_hours_parse_and_wrap_midnight() -> None:
    hours = QuietHours.parse("22:30-07:15")
    assert str(hours) == "22:30-07:15"
    assert hours.is_quiet(datetime(2026, 1, 1, 23, 0)) and hours.is_quiet(
        datetime(2026, 1, 1, 7, 0)
    )
    assert not hours.is_quiet(datetime(2026, 1, 1, 7, 15))
    assert not QuietHours.parse("off").is_quiet(datetime(2026, 1, 1, 3, 0))
    with pytest.raises(ConfigError):
        QuietHours.parse("late")


def test_policy_from_env() -> None:
    policy = OutboundPolicy.from_env(
        {
            "OUTBOUND_QUIET_HOURS": "20:00-09:00",
            "OUTBOUND_DEFAULT_TIMEZONE": "Europe/London",
            "OUTBOUND_CUSTOMER_LIMIT": "3/3600",
            "OUTBOUND_GLOBAL_LIMIT": "100/10",
        }
    )
    assert str(policy.quiet_hours) == "20:00-09:00"
    assert policy.limits == RateLimits(3, 3600, 100, 10)
    for bad in (
        {"OUTBOUND_DEFAULT_TIMEZONE": "Mars/Olympus"},
        {"OUTBOUND_CUSTOMER_LIMIT": "many"},
        {"OUTBOUND_GLOBAL_LIMIT": "0/60"},
    ):
        with pytest.raises(ConfigError):
            OutboundPolicy.from_env(bad)


def test_decisions_need_an_aware_time() -> None:
    with pytest.raises(ValueError):
        decide(phone_facts(), POLICY, datetime(2026, 12, 7, 12, 0))
