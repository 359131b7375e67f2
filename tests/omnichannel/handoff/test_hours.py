"""Business hours (omnichannel/handoff/hours.py): parsing, open time across nights, weekends,
holidays and a summer-time change, and how a reopening is told."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from omnichannel.errors import ConfigError
from omnichannel.handoff.hours import BusinessHours

pytestmark = pytest.mark.unit

NY = ZoneInfo("America/New_York")


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=NY).timestamp()


HOURS = BusinessHours.parse(
    "America/New_York", "mon-fri 09:00-12:00,13:00-17:30; sat 10:00-14:00", "2026-12-25"
)


def test_open_and_closed_moments() -> None:
    assert HOURS.is_open(at("2026-03-02T09:00"))  # a Monday
    assert not HOURS.is_open(at("2026-03-02T12:30")), "lunch"
    assert not HOURS.is_open(at("2026-03-02T17:30")), "the end of a span is closed"
    assert HOURS.is_open(at("2026-03-07T13:59"))  # Saturday
    assert not HOURS.is_open(at("2026-03-08T11:00"))  # Sunday
    assert not HOURS.is_open(at("2026-12-25T10:00")), "a holiday"


def test_next_opening_skips_nights_weekends_and_holidays() -> None:
    assert HOURS.next_open(at("2026-03-02T10:00")) == at("2026-03-02T10:00")
    assert HOURS.next_open(at("2026-03-06T18:00")) == at("2026-03-07T10:00")
    assert HOURS.next_open(at("2026-03-07T15:00")) == at("2026-03-09T09:00")
    assert HOURS.next_open(at("2026-12-24T18:00")) == at("2026-12-26T10:00")


def test_open_time_is_counted_only_while_open() -> None:
    # Friday 17:20 + 30 open minutes: 10 on Friday, 20 on Saturday morning.
    assert HOURS.after_open_seconds(at("2026-03-06T17:20"), 30 * 60) == at("2026-03-07T10:20")
    # Across lunch.
    assert HOURS.after_open_seconds(at("2026-03-02T11:50"), 20 * 60) == at("2026-03-02T13:10")
    # Requested at night: counted from the opening.
    assert HOURS.after_open_seconds(at("2026-03-02T22:00"), 15 * 60) == at("2026-03-03T09:15")


def test_summer_time_is_the_zones_own() -> None:
    # The clocks go forward on 2026-03-08: 09:00 local is 13:00 UTC on Monday the 9th.
    opening = HOURS.next_open(at("2026-03-08T12:00"))
    assert datetime.fromtimestamp(opening, ZoneInfo("UTC")).hour == 13


def test_always_open_by_default_and_adjacent_days_merge() -> None:
    always = BusinessHours.parse()
    assert always.always_open and always.is_open(0.0) and always.is_open(at("2026-03-08T03:00"))
    assert always.after_open_seconds(1000.0, 3 * 86400) == 1000.0 + 3 * 86400


def test_a_reopening_is_told_from_now() -> None:
    friday_night = at("2026-03-06T18:00")
    assert HOURS.describe(at("2026-03-07T10:00"), friday_night) == (
        "tomorrow at 10:00 (New York time)"
    )
    assert (
        HOURS.describe(at("2026-03-09T09:00"), friday_night) == "on Monday at 9:00 (New York time)"
    )
    assert HOURS.describe(at("2026-03-06T18:30"), friday_night).startswith("today at 18:30")
    assert BusinessHours.parse("UTC").describe(0, 0) == "today at 0:00 (UTC)"


@pytest.mark.parametrize(
    ("zone", "hours", "holidays", "message"),
    [
        ("Mars/Olympus", None, None, "HANDOFF_TIMEZONE"),
        (None, "mon-fri 9-5", None, "is not a span"),
        (None, "funday 09:00-17:00", None, "is not a day"),
        (None, "mon 10:00-09:00", None, "within one day"),
        (None, "mon 09:00-12:00,11:00-13:00", None, "overlap"),
        (None, "mon", None, "needs days and spans"),
        (None, " ; ", None, "no day has opening hours"),
        (None, None, "25/12/2026", "HANDOFF_HOLIDAYS"),
    ],
)
def test_bad_settings_are_refused_with_the_settings_name(zone, hours, holidays, message) -> None:
    with pytest.raises(ConfigError, match=message):
        BusinessHours.parse(zone, hours, holidays)
