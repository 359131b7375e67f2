"""What the insight page asks for and the files it downloads. No Sanic, no Rasa.

- :func:`parse_period`: ``from``, ``to`` (UTC days, ``YYYY-MM-DD``; default the last 7 days)
  and ``channel`` (a channel kind or ``all``) from the query string;
- :func:`report_csv`: the figures as CSV, one row per channel and a total, then the
  not-understood messages (cells a spreadsheet would run as formulas are quoted inert);
- :func:`training_examples`: the not-understood messages as Rasa NLU training data (YAML,
  ``version: "3.1"``, the layout of ``data/nlu.yml``), each under the intent NLU ranked next,
  for a designer to check, file under the right intent and drop into ``data/``.
"""

from __future__ import annotations

import csv
import datetime
import io
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from omnichannel.channels import KINDS
from omnichannel.insight.store import MAX_PERIOD_DAYS, days_between

ALL = "all"
DEFAULT_DAYS = 7
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
#: Characters that make a spreadsheet read a cell as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class BadPeriod(ValueError):
    """The period cannot be read; the message is safe to return in a 400."""


@dataclass(frozen=True)
class Period:
    first: datetime.date
    last: datetime.date
    #: The channels reported (one, or every kind for ``all``).
    channels: Tuple[str, ...]
    channel: str

    @property
    def days(self) -> List[str]:
        return days_between(self.first, self.last)


def _day(value: str, name: str) -> datetime.date:
    if not _DAY.fullmatch(value):
        raise BadPeriod(f"{name} must be a day as YYYY-MM-DD")
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise BadPeriod(f"{name} is not a calendar day") from None


def parse_period(args: Mapping[str, Any], today: datetime.date) -> Period:
    """The period and channel a request's query string asks for."""

    def one(name: str) -> str:
        value = args.get(name)
        if isinstance(value, list):
            value = value[0] if value else ""
        return str(value or "").strip()

    last = _day(one("to"), "to") if one("to") else today
    first = (
        _day(one("from"), "from")
        if one("from")
        else last - datetime.timedelta(days=DEFAULT_DAYS - 1)
    )
    if last < first:
        raise BadPeriod("the period ends before it starts")
    if (last - first).days >= MAX_PERIOD_DAYS:
        raise BadPeriod(f"a period covers at most {MAX_PERIOD_DAYS} days")
    channel = one("channel") or ALL
    if channel != ALL and channel not in KINDS:
        raise BadPeriod(f"channel must be one of {', '.join((ALL, *KINDS))}")
    channels = tuple(KINDS) if channel == ALL else (channel,)
    return Period(first, last, channels, channel)


def _inert(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


FIGURES = (
    "conversations",
    "turns",
    "contained",
    "containment_rate",
    "handed_off",
    "handoff_rate",
    "handoffs_unavailable",
    "agent_replies",
    "fallbacks",
    "fallback_rate",
    "barge_ins",
)


def report_csv(report: Dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["period", report["days"][0], report["days"][-1]])
    writer.writerow(["channel", *FIGURES, "reply_p50_s", "reply_p90_s", "reply_p99_s"])
    rows = [(channel, report["by_channel"][channel]) for channel in report["channels"]]
    rows.append((ALL, report["total"]))
    for channel, figures in rows:
        replies = figures["reply_seconds"]
        writer.writerow(
            [channel, *(figures[name] for name in FIGURES)]
            + [replies["p50"], replies["p90"], replies["p99"]]
        )
    writer.writerow([])
    writer.writerow(["not understood", "count", "suggested intent", "conversations"])
    for item in report["not_understood"]:
        writer.writerow(
            [
                _inert(item["text"]),
                item["count"],
                item["suggested_intent"],
                " ".join(item["conversations"]),
            ]
        )
    return out.getvalue()


def training_examples(items: Sequence[Dict[str, Any]], first: str, last: str) -> str:
    """Rasa NLU training data (YAML) of the not-understood messages."""
    by_intent: Dict[str, List[str]] = {}
    for item in items:
        by_intent.setdefault(item["suggested_intent"], []).append(item["text"])
    lines = [
        f"# Messages the assistant did not understand, {first} to {last} (insight page).",
        "# Each is filed under the intent NLU ranked next: check every example, move it under",
        "# the right intent (or delete it), then put this file in data/ and train.",
        'version: "3.1"',
        "",
        "nlu:",
    ]
    for intent in sorted(by_intent):
        lines.append(f"  - intent: {intent}")
        lines.append("    examples: |")
        for text in by_intent[intent]:
            lines.append(f"      - {' '.join(text.split())}")
        lines.append("")
    if not by_intent:
        lines[-1] = "nlu: []"
    return "\n".join(lines).rstrip("\n") + "\n"
