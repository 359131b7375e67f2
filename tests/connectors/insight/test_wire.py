"""The insight page's period, CSV and training file (pure)."""

from __future__ import annotations

import csv
import datetime
import io
import re
from pathlib import Path

import pytest
from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLReader

from connectors.insight import channel as insight_channel
from connectors.insight.wire import BadPeriod, parse_period, report_csv, training_examples
from omnichannel.channels import KINDS

pytestmark = pytest.mark.unit

TODAY = datetime.date(2026, 12, 7)


def test_the_period_defaults_to_the_last_seven_days_and_is_checked() -> None:
    period = parse_period({}, TODAY)
    assert (period.first, period.last, period.channel) == (
        datetime.date(2026, 12, 1),
        TODAY,
        "all",
    )
    assert parse_period({"channel": ["sms"]}, TODAY).channels == ("sms",)
    for bad in (
        {"from": "2026-13-01"},
        {"from": "yesterday"},
        {"from": "2026-12-08", "to": "2026-12-07"},
        {"from": "2020-01-01"},
        {"channel": "fax"},
    ):
        with pytest.raises(BadPeriod):
            parse_period(bad, TODAY)


def _figures(**extra: object) -> dict:
    base = {
        "conversations": 2,
        "turns": 4,
        "contained": 1,
        "containment_rate": 0.5,
        "handed_off": 1,
        "handoff_rate": 0.5,
        "handoffs_unavailable": 1,
        "agent_replies": 3,
        "fallbacks": 1,
        "fallback_rate": 0.25,
        "barge_ins": 0,
        "reply_seconds": {"p50": 0.25, "p90": 1.0, "p99": 1.0},
    }
    return {**base, **extra}


def test_csv_cells_a_spreadsheet_would_run_are_inert() -> None:
    report = {
        "days": ["2026-12-01", "2026-12-07"],
        "channels": ["sms"],
        "by_channel": {"sms": _figures()},
        "total": _figures(),
        "not_understood": [
            {
                "text": '=HYPERLINK("http://evil.example","x")',
                "count": 3,
                "suggested_intent": "greet",
                "conversations": ["c_a", "c_b"],
            }
        ],
    }
    rows = list(csv.reader(io.StringIO(report_csv(report))))
    assert rows[2][:3] == ["sms", "2", "4"] and rows[3][0] == "all"
    assert rows[-1][0] == '\'=HYPERLINK("http://evil.example","x")'
    assert rows[-1][1:] == ["3", "greet", "c_a c_b"]


def test_training_examples_are_rasa_nlu_data_by_suggested_intent() -> None:
    text = training_examples(
        [
            {"text": "where my parcel at", "suggested_intent": "track_order"},
            {"text": "- yaml: [tricky] #text", "suggested_intent": "track_order"},
            {"text": "zxqv", "suggested_intent": "other"},
        ],
        "2026-12-01",
        "2026-12-07",
    )
    examples = RasaYAMLReader().reads(text).intent_examples
    found = {(e.get("intent"), e.get("text")) for e in examples}
    assert found == {
        ("track_order", "where my parcel at"),
        ("track_order", "- yaml: [tricky] #text"),
        ("other", "zxqv"),
    }
    assert RasaYAMLReader().reads(training_examples([], "a", "b")).intent_examples == []


def test_the_page_offers_every_channel_kind_with_a_label() -> None:
    """A new channel kind shows up in the page's channel choice and its charts' labels."""
    static = Path(insight_channel.__file__).parent / "static"
    page = (static / "index.html").read_text()
    offered = re.findall(r'<option value="([a-z]+)">', page)
    assert offered == ["all", *KINDS]
    labels = re.search(r"var LABELS = \{([^}]*)\}", (static / "insight.js").read_text())
    assert labels is not None
    assert re.findall(r"(\w+):", labels.group(1)) == list(KINDS)
