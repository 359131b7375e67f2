"""When a customer wants to be called: the time in what they wrote or said, and the moment the
call is due inside the business's hours. Pure.

The customer's words are read with a small grammar rather than a general date parser: a
message that asks for a call usually carries other numbers too ("call me about order 40213 at
3pm"), and a general parser reads those as years or hours. What is understood:

- now: no time at all, or "now", "right away", "asap", "as soon as possible", "straight away";
- in a while: "in 20 minutes", "in an hour", "in half an hour", "in 2 hours";
- a clock time: "3pm", "3:30 pm", "15:00", "at 3", "3 o'clock", "noon", "half past 3",
  "quarter to 4"; "at 3" without am/pm means the afternoon for 1 to 7, else the morning;
- a part of the day: "this morning" (10:00), "afternoon" (14:00), "evening" (18:00);
- a day: "today", "tomorrow", a weekday ("on Monday": the next one, never today).

A time the customer named is honoured when the business is open then; when it is closed the
call is due when it next opens, and the answer says so. A clock time without a day that has
passed today means tomorrow; a day and time that have passed (or are further ahead than
``HORIZON_DAYS``) are refused, so the customer can say another.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping, Optional, Union

from omnichannel.handoff.hours import BusinessHours

#: How far ahead a callback may be booked.
HORIZON_DAYS = 14

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "a": 1, "an": 1,
}  # fmt: skip
_PARTS_OF_DAY = {"morning": 10, "afternoon": 14, "evening": 18, "tonight": 19}

_NOW = re.compile(
    r"\b(now|right away|straight away|asap|as soon as (?:possible|you can)|immediately)\b"
)
_IN = re.compile(
    r"\bin (?:(half an|an|a|\d{1,3}|" + "|".join(_NUMBER_WORDS) + r")\s*)"
    r"(hours?|hrs?|minutes?|mins?)\b"
)
_IN_HALF_HOUR = re.compile(r"\bin (?:half an hour|30 ?mins?)\b")
_CLOCK_MERIDIEM = re.compile(r"(?<![\d:.])(\d{1,2})(?:[:.](\d{2}))?\s*(a\.?m\.?|p\.?m\.?)(?!\w)")
_CLOCK_24 = re.compile(r"(?<![\d:])([01]?\d|2[0-3]):([0-5]\d)(?![\d:])")
_CLOCK_AT = re.compile(r"\b(?:at|around|about|by)\s+(\d{1,2})(?![\d:])(?!\s*(?:mins?|minutes?))")
_OCLOCK = re.compile(r"(?<![\d:])(\d{1,2})\s*o'?\s?clock\b")
_HOUR_WORDS = ("one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve")
_HALF_PAST = re.compile(r"\b(half|quarter) (past|after|to) (\d{1,2}|" + _HOUR_WORDS + r")\b")
_NOON = re.compile(r"\b(noon|midday|12 noon)\b")
_TODAY = re.compile(r"\b(today|this (?:morning|afternoon|evening)|tonight)\b")
_TOMORROW = re.compile(r"\b(tomorrow|tmrw|tmr)\b")
_WEEKDAY = re.compile(r"\b(" + "|".join(_WEEKDAYS) + r")\b")
_PART = re.compile(r"\b(" + "|".join(_PARTS_OF_DAY) + r")\b")
#: Words that show the message names some time, understood or not.
_TIME_WORDS = re.compile(
    r"\b(am|pm|o'?clock|later|tomorrow|today|tonight|morning|afternoon|evening|noon|"
    r"minutes?|hours?|mins?|half past|quarter (?:past|to)|" + "|".join(_WEEKDAYS) + r")\b"
    r"|\d{1,2}[:.]\d{2}|\d\s*[ap]\.?m\b"
)


@dataclass(frozen=True)
class RequestedTime:
    """What the customer asked for. ``asap``, or ``in_seconds`` from now, or a clock time
    (``hour``/``minute``) on a day (``days_ahead`` 0 = today, or a ``weekday``, Monday 0)."""

    asap: bool = False
    in_seconds: Optional[int] = None
    hour: Optional[int] = None
    minute: int = 0
    days_ahead: Optional[int] = None
    weekday: Optional[int] = None


@dataclass(frozen=True)
class Unclear:
    """The message names a time this grammar cannot read; ask again."""


def _number(text: str) -> int:
    return int(text) if text.isdigit() else _NUMBER_WORDS[text]


def _guess_hour(hour: int) -> int:
    """An hour said without am/pm: 1-7 is the afternoon (nobody means 3 in the night)."""
    return hour + 12 if 1 <= hour <= 7 else hour


def _clock(text: str) -> Optional[tuple[int, int]]:
    match = _CLOCK_MERIDIEM.search(text)
    if match:
        hour, minute = int(match.group(1)), int(match.group(2) or 0)
        if not 1 <= hour <= 12 or minute > 59:
            return None
        pm = match.group(3).startswith("p")
        return (hour % 12 + (12 if pm else 0), minute)
    match = _CLOCK_24.search(text)
    if match:
        hour, minute = int(match.group(1)), int(match.group(2))
        return (_guess_hour(hour) if hour <= 12 else hour, minute)
    match = _HALF_PAST.search(text)
    if match:
        hour = _number(match.group(3))
        if not 1 <= hour <= 12:
            return None
        minutes = 30 if match.group(1) == "half" else 15
        if match.group(2) == "to":
            return (_guess_hour(hour - 1 or 12), 60 - minutes)
        return (_guess_hour(hour), minutes)
    match = _OCLOCK.search(text) or _CLOCK_AT.search(text)
    if match:
        hour = int(match.group(1))
        if not 1 <= hour <= 12:
            return None
        return (_guess_hour(hour), 0)
    if _NOON.search(text):
        return (12, 0)
    match = _PART.search(text)
    if match:
        return (_PARTS_OF_DAY[match.group(1)], 0)
    return None


def requested_time(text: str) -> Union[RequestedTime, Unclear]:
    """The time in a customer's message (``asap`` when it names none)."""
    lowered = " ".join(text.lower().replace("’", "'").split())
    match = _IN.search(lowered)
    if match or _IN_HALF_HOUR.search(lowered):
        if match is None or match.group(1) == "half an":
            return RequestedTime(in_seconds=30 * 60)
        amount = _number(match.group(1))
        unit = 3600 if match.group(2).startswith("h") else 60
        return RequestedTime(in_seconds=amount * unit)
    clock = _clock(lowered)
    weekday_match = _WEEKDAY.search(lowered)
    days_ahead: Optional[int] = None
    if _TOMORROW.search(lowered):
        days_ahead = 1
    elif _TODAY.search(lowered):
        days_ahead = 0
    weekday = _WEEKDAYS.index(weekday_match.group(1)) if weekday_match else None
    if clock is None and days_ahead is None and weekday is None:
        if _NOW.search(lowered) or not _TIME_WORDS.search(lowered):
            return RequestedTime(asap=True)
        return Unclear()
    if clock is None:
        # A day without a time: as early as the business opens that day.
        return RequestedTime(days_ahead=days_ahead, weekday=weekday, hour=None)
    return RequestedTime(hour=clock[0], minute=clock[1], days_ahead=days_ahead, weekday=weekday)


@dataclass(frozen=True)
class CallbackTime:
    """When the call is due (epoch seconds). ``asked``: the moment the customer named, when
    the business is closed then (``due`` is the next opening after it)."""

    due: float
    asked: Optional[float] = None

    @property
    def moved_to_opening(self) -> bool:
        return self.asked is not None and self.asked != self.due


@dataclass(frozen=True)
class Refused:
    """A time that cannot be booked: ``reason`` is ``passed``, ``too_far`` or ``closed`` (no
    opening within the horizon)."""

    reason: str


def due_time(
    requested: RequestedTime,
    now: float,
    hours: BusinessHours,
    horizon_days: int = HORIZON_DAYS,
    day_of: Optional[float] = None,
) -> Union[CallbackTime, Refused]:
    """The moment the call is due, inside business hours. ``day_of``: a clock time without a
    day means that moment's day (moving a booked callback "to 4pm" keeps its day) when it is
    still ahead."""
    horizon = now + horizon_days * 86400
    if requested.asap:
        asked = now
    elif requested.in_seconds is not None:
        asked = now + requested.in_seconds
    else:
        local_now = datetime.fromtimestamp(now, hours.zone)
        if requested.weekday is not None and requested.days_ahead is None:
            days = (requested.weekday - local_now.weekday()) % 7 or 7
        else:
            days = requested.days_ahead or 0
        day = local_now.date() + timedelta(days=days)
        if day_of is not None and requested.days_ahead is None and requested.weekday is None:
            booked_day = datetime.fromtimestamp(day_of, hours.zone).date()
            if requested.hour is not None and booked_day > day:
                day = booked_day
        if requested.hour is None:
            start = datetime.combine(day, datetime.min.time(), tzinfo=hours.zone).timestamp()
            opening = hours.next_open(max(start, now))
            if opening is None or opening > horizon:
                return Refused("closed")
            if datetime.fromtimestamp(opening, hours.zone).date() != day:
                return Refused("closed")
            return CallbackTime(opening)
        moment = datetime(
            day.year, day.month, day.day, requested.hour, requested.minute, tzinfo=hours.zone
        ).timestamp()
        explicit_day = requested.days_ahead is not None or requested.weekday is not None
        if moment <= now:
            if explicit_day:
                return Refused("passed")
            tomorrow = day + timedelta(days=1)
            moment = datetime(
                tomorrow.year,
                tomorrow.month,
                tomorrow.day,
                requested.hour,
                requested.minute,
                tzinfo=hours.zone,
            ).timestamp()
        asked = moment
    if asked > horizon:
        return Refused("too_far")
    due = hours.next_open(asked)
    if due is None or due > horizon:
        return Refused("closed")
    return CallbackTime(due, asked if due != asked else None)


def callback_hours(env: Optional[Mapping[str, str]] = None) -> BusinessHours:
    """The hours calls are placed in: the support team's (``HANDOFF_TIMEZONE``,
    ``HANDOFF_HOURS``, ``HANDOFF_HOLIDAYS``; always open when unset). Raises ConfigError."""
    env = os.environ if env is None else env
    return BusinessHours.parse(
        env.get("HANDOFF_TIMEZONE") or None,
        env.get("HANDOFF_HOURS") or None,
        env.get("HANDOFF_HOLIDAYS") or None,
    )
