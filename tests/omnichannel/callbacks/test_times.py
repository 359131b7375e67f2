"""Callback times in customers' words (omnichannel/callbacks/times.py): what is read, and the
moment a call is due inside business hours."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from omnichannel.callbacks.times import (
    CallbackTime,
    Refused,
    RequestedTime,
    Unclear,
    callback_hours,
    due_time,
    requested_time,
)
from omnichannel.handoff.hours import BusinessHours

pytestmark = pytest.mark.unit

NY = ZoneInfo("America/New_York")
HOURS = BusinessHours.parse("America/New_York", "mon-fri 09:00-17:30; sat 10:00-14:00")
#: Tuesday 3 March 2026, 11:00 in New York.
NOW = datetime(2026, 3, 3, 11, 0, tzinfo=NY).timestamp()


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=NY).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call me back", RequestedTime(asap=True)),
        ("call me back now please", RequestedTime(asap=True)),
        ("call me about order 40213", RequestedTime(asap=True)),
        ("call me back in 20 minutes", RequestedTime(in_seconds=1200)),
        ("call me in an hour", RequestedTime(in_seconds=3600)),
        ("in half an hour", RequestedTime(in_seconds=1800)),
        ("in 2 hours", RequestedTime(in_seconds=7200)),
        ("call me at 3pm", RequestedTime(hour=15)),
        ("call me about order 40213 at 3pm", RequestedTime(hour=15)),
        ("at 3", RequestedTime(hour=15)),
        ("at 10", RequestedTime(hour=10)),
        ("3:30 pm tomorrow", RequestedTime(hour=15, minute=30, days_ahead=1)),
        ("15:45", RequestedTime(hour=15, minute=45)),
        ("9.30am", RequestedTime(hour=9, minute=30)),
        ("half past two", RequestedTime(hour=14, minute=30)),
        ("half past 2", RequestedTime(hour=14, minute=30)),
        ("quarter to 4", RequestedTime(hour=15, minute=45)),
        ("4 o'clock", RequestedTime(hour=16)),
        ("at noon", RequestedTime(hour=12)),
        ("tomorrow morning", RequestedTime(hour=10, days_ahead=1)),
        ("this afternoon", RequestedTime(hour=14, days_ahead=0)),
        ("on Monday at 11", RequestedTime(hour=11, weekday=0)),
        ("on friday", RequestedTime(weekday=4)),
        ("tomorrow", RequestedTime(days_ahead=1)),
        ("call me later", None),
    ],
)
def test_what_is_read(text: str, expected: RequestedTime | None) -> None:
    found = requested_time(text)
    if expected is None:
        assert isinstance(found, Unclear)
    else:
        assert found == expected


def test_a_time_that_cannot_be_read_is_asked_again() -> None:
    assert isinstance(requested_time("call me later"), Unclear)
    assert isinstance(requested_time("call me at 13 pm"), Unclear)
    assert isinstance(requested_time("ring me at twenty past the hour"), Unclear)


def test_now_inside_hours_is_now() -> None:
    assert due_time(RequestedTime(asap=True), NOW, HOURS) == CallbackTime(NOW)


def test_now_outside_hours_is_the_next_opening() -> None:
    friday_night = at("2026-03-06T20:00")
    when = due_time(RequestedTime(asap=True), friday_night, HOURS)
    assert isinstance(when, CallbackTime)
    assert when.due == at("2026-03-07T10:00") and when.moved_to_opening


def test_a_clock_time_today() -> None:
    assert due_time(RequestedTime(hour=15), NOW, HOURS) == CallbackTime(at("2026-03-03T15:00"))


def test_a_clock_time_that_passed_today_means_tomorrow() -> None:
    when = due_time(RequestedTime(hour=10), NOW, HOURS)
    assert when == CallbackTime(at("2026-03-04T10:00"))


def test_a_day_and_time_that_passed_is_refused() -> None:
    assert due_time(RequestedTime(hour=10, days_ahead=0), NOW, HOURS) == Refused("passed")


def test_lunch_or_evening_moves_to_the_next_opening() -> None:
    when = due_time(RequestedTime(hour=19), NOW, HOURS)
    assert isinstance(when, CallbackTime)
    assert when.due == at("2026-03-04T09:00") and when.asked == at("2026-03-03T19:00")


def test_a_weekday_is_the_next_one_and_a_day_alone_is_its_opening() -> None:
    assert due_time(RequestedTime(hour=11, weekday=0), NOW, HOURS) == CallbackTime(
        at("2026-03-09T11:00")
    )
    assert due_time(RequestedTime(weekday=1), NOW, HOURS) == CallbackTime(at("2026-03-10T09:00"))
    assert due_time(RequestedTime(weekday=6), NOW, HOURS) == Refused("closed"), "Sunday"


def test_in_a_while_and_the_horizon() -> None:
    assert due_time(RequestedTime(in_seconds=1200), NOW, HOURS) == CallbackTime(NOW + 1200)
    assert due_time(RequestedTime(in_seconds=30 * 86400), NOW, HOURS) == Refused("too_far")


def test_summer_time_keeps_the_clock() -> None:
    # 8 March 2026: clocks go forward in New York; "tomorrow at 10" from Saturday is 10:00 EDT.
    saturday = at("2026-03-07T12:00")
    when = due_time(RequestedTime(hour=10, days_ahead=2), saturday, HOURS)
    assert when == CallbackTime(at("2026-03-09T10:00"))


def test_hours_come_from_the_support_teams_settings() -> None:
    hours = callback_hours(
        {"HANDOFF_TIMEZONE": "Europe/London", "HANDOFF_HOURS": "mon 09:00-10:00"}
    )
    assert hours.zone.key == "Europe/London"
    assert callback_hours({}).always_open


def test_moving_to_a_clock_time_keeps_the_booked_day() -> None:
    booked = at("2026-03-05T15:00")
    assert due_time(RequestedTime(hour=16), NOW, HOURS, day_of=booked) == CallbackTime(
        at("2026-03-05T16:00")
    )
    # A day named wins; a booking for today moves within today.
    assert due_time(
        RequestedTime(hour=16, days_ahead=1), NOW, HOURS, day_of=booked
    ) == CallbackTime(at("2026-03-04T16:00"))
    assert due_time(RequestedTime(hour=16), NOW, HOURS, day_of=NOW + 60) == CallbackTime(
        at("2026-03-03T16:00")
    )
