"""When people are there to answer: the support team's weekly hours, in its time zone, minus
holidays. Pure (the standard library's ``zoneinfo`` for the zone's rules, summer time included).

Written in settings as plain text (``HANDOFF_HOURS``, ``HANDOFF_TIMEZONE``, ``HANDOFF_HOLIDAYS``;
docs/SUPPORT.md)::

    mon-fri 09:00-17:30; sat 10:00-14:00        # days or day ranges, then one or more spans
    mon,wed 08:00-12:00,13:00-18:00             # lists of days and of spans
    mon-sun 00:00-24:00                         # always open (the default)

Waiting bounds are counted in open time (:meth:`BusinessHours.after_open_seconds`): a customer
who asks for a person on Friday night is told when the team is back, and the "still nobody"
notice comes a quarter of an hour into Monday morning, not at 22:15 on Friday.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import FrozenSet, Iterator, List, Optional, Tuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from omnichannel.errors import ConfigError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ALWAYS = "mon-sun 00:00-24:00"
#: How far ahead an opening is looked for (a year of holidays cannot close every day).
LOOKAHEAD_DAYS = 400
_SPAN = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")

#: Minutes since midnight: [start, end), end up to 24 * 60.
Span = Tuple[int, int]


def _day_indexes(text: str) -> List[int]:
    found: List[int] = []
    for part in text.split(","):
        part = part.strip().lower()
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ConfigError(f"HANDOFF_HOURS: {part!r} is not a day (mon…sun) or a day range")
        start, end = DAYS.index(first), DAYS.index(last or first)
        index = start
        while True:
            found.append(index)
            if index == end:
                break
            index = (index + 1) % 7
    return found


def _spans(text: str) -> List[Span]:
    spans: List[Span] = []
    for part in text.split(","):
        match = _SPAN.match(part.strip())
        if not match:
            raise ConfigError(f"HANDOFF_HOURS: {part.strip()!r} is not a span like 09:00-17:30")
        h1, m1, h2, m2 = (int(group) for group in match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if m1 > 59 or m2 > 59 or start >= 24 * 60 or end > 24 * 60 or end <= start:
            raise ConfigError(f"HANDOFF_HOURS: {part.strip()!r} is not a span within one day")
        spans.append((start, end))
    return spans


@dataclass(frozen=True)
class BusinessHours:
    """The team's opening hours (see the module docstring)."""

    zone: ZoneInfo
    #: Per weekday (Monday first), its open spans, sorted and not overlapping.
    weekly: Tuple[Tuple[Span, ...], ...]
    holidays: FrozenSet[date] = frozenset()

    @classmethod
    def parse(
        cls,
        timezone: Optional[str] = None,
        hours: Optional[str] = None,
        holidays: Optional[str] = None,
    ) -> BusinessHours:
        """Raises ConfigError, naming the setting and the part that is wrong."""
        try:
            zone = ZoneInfo((timezone or "UTC").strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(
                f"HANDOFF_TIMEZONE: {timezone!r} is not an IANA time zone (e.g. Europe/London)"
            ) from None
        per_day: List[List[Span]] = [[] for _ in DAYS]
        for clause in (hours or ALWAYS).split(";"):
            clause = clause.strip()
            if not clause:
                continue
            days, _, spans = clause.partition(" ")
            if not spans.strip():
                raise ConfigError(f"HANDOFF_HOURS: {clause!r} needs days and spans")
            for day in _day_indexes(days):
                per_day[day].extend(_spans(spans))
        weekly: List[Tuple[Span, ...]] = []
        for day_spans in per_day:
            day_spans.sort()
            for (_, end), (start, _) in zip(day_spans, day_spans[1:], strict=False):
                if start < end:
                    raise ConfigError("HANDOFF_HOURS: spans of one day overlap")
            weekly.append(tuple(day_spans))
        if not any(weekly):
            raise ConfigError("HANDOFF_HOURS: no day has opening hours")
        closed = set()
        for part in (holidays or "").replace(";", ",").split(","):
            if part.strip():
                try:
                    closed.add(date.fromisoformat(part.strip()))
                except ValueError:
                    raise ConfigError(
                        f"HANDOFF_HOLIDAYS: {part.strip()!r} is not a date like 2026-12-25"
                    ) from None
        return cls(zone, tuple(weekly), frozenset(closed))

    @property
    def always_open(self) -> bool:
        return not self.holidays and all(spans == ((0, 24 * 60),) for spans in self.weekly)

    # -- open intervals, as epoch seconds ---------------------------------------------------

    def _local(self, day: date, minutes: int) -> float:
        if minutes >= 24 * 60:
            return self._local(day + timedelta(days=1), minutes - 24 * 60)
        moment = datetime.combine(day, time(minutes // 60, minutes % 60), tzinfo=self.zone)
        return moment.timestamp()

    def _intervals_from(self, at: float) -> Iterator[Tuple[float, float]]:
        """Open intervals ``(start, end)`` that end after ``at``, in order (adjacent spans, e.g.
        Monday 00:00-24:00 and Tuesday 00:00-…, come out merged)."""
        day = datetime.fromtimestamp(at, self.zone).date() - timedelta(days=1)
        pending: Optional[Tuple[float, float]] = None
        for offset in range(LOOKAHEAD_DAYS):
            current = day + timedelta(days=offset)
            if current in self.holidays:
                continue
            for start, end in self.weekly[current.weekday()]:
                interval = (self._local(current, start), self._local(current, end))
                if interval[1] <= at:
                    continue
                if pending is not None and interval[0] <= pending[1]:
                    pending = (pending[0], max(pending[1], interval[1]))
                    continue
                if pending is not None:
                    yield pending
                pending = interval
        if pending is not None:
            yield pending

    def is_open(self, at: float) -> bool:
        for start, _ in self._intervals_from(at):
            return start <= at
        return False

    def next_open(self, at: float) -> Optional[float]:
        """``at`` when open, else when the team is next there (None: not within a year)."""
        for start, _ in self._intervals_from(at):
            return max(start, at)
        return None

    def after_open_seconds(self, at: float, seconds: float) -> Optional[float]:
        """The moment when ``seconds`` of open time have passed since ``at`` (None: beyond the
        look-ahead)."""
        left = seconds
        for start, end in self._intervals_from(at):
            start = max(start, at)
            if end - start >= left:
                return start + left
            left -= end - start
        return None

    # -- words for customers ----------------------------------------------------------------

    def zone_label(self) -> str:
        """``New York time`` for America/New_York; ``UTC`` for UTC."""
        name = self.zone.key
        if name.upper() in ("UTC", "ETC/UTC", "GMT"):
            return "UTC"
        return name.rsplit("/", 1)[-1].replace("_", " ") + " time"

    def describe(self, moment: float, now: float) -> str:
        """When ``moment`` is, said from ``now``: ``today at 9:00``, ``tomorrow at 9:00``,
        ``on Monday at 9:00``, ``on 2 January at 9:00`` (the zone's local time)."""
        local = datetime.fromtimestamp(moment, self.zone)
        today = datetime.fromtimestamp(now, self.zone).date()
        clock = f"{local.hour}:{local.minute:02d}"
        days = (local.date() - today).days
        if days <= 0:
            when = "today"
        elif days == 1:
            when = "tomorrow"
        elif days < 7:
            when = f"on {DAY_NAMES[local.weekday()]}"
        else:
            when = f"on {local.day} {local.strftime('%B')}"
        return f"{when} at {clock} ({self.zone_label()})"
