"""The held-out evaluation (devtools/nlu_heldout.py): its phrasings stay out of training, cover
every intent in every channel style, and its mistakes are ranked by what they do to a customer."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from devtools import nlu_heldout
from devtools.nlu_heldout import (
    ACTS_WRONGLY,
    CONFIRMS_WRONG_ACT,
    MISSES_ACT,
    NOT_UNDERSTOOD,
    STYLES,
    WRONG_ANSWER,
    Phrasing,
    annotated_examples,
    comparable,
    kind_of_mistake,
    load_phrasings,
    outcome_of,
)
from omnichannel.nlu.confirmation import CONFIRM_INTENT, MARKER_INTENTS
from testkit.processes import ROOT

#: The held-out target: at least this many phrasings per channel style.
MIN_PER_STYLE = 60


def _training_texts() -> set:
    texts = set()
    for path in (ROOT / "data").rglob("*.yml"):
        texts |= {comparable(text) for _, text, _ in annotated_examples(path)}
    return texts


@pytest.mark.unit
def test_no_held_out_phrasing_is_a_training_example() -> None:
    training = _training_texts()
    assert len(training) > 200
    shared = [p.text for p in load_phrasings() if comparable(p.text) in training]
    assert shared == []


@pytest.mark.unit
def test_every_style_has_enough_phrasings_of_every_intent() -> None:
    domain = yaml.safe_load((ROOT / "domain.yml").read_text(encoding="utf-8"))
    intents = {name for name in domain["intents"] if name not in MARKER_INTENTS}
    phrasings = load_phrasings()
    for style in STYLES:
        mine = [p for p in phrasings if p.style == style]
        assert len(mine) >= MIN_PER_STYLE, style
        counts = {intent: sum(p.intent == intent for p in mine) for intent in intents}
        assert min(counts.values()) >= 3, (style, counts)
        assert {p.intent for p in mine} <= intents, style


@pytest.mark.unit
def test_annotated_order_numbers_are_read_as_digits(tmp_path: Path) -> None:
    (tmp_path / "spoken.yml").write_text(
        'version: "3.1"\nnlu:\n  - intent: inform_order_number\n    examples: |\n'
        "      - it's [four zero two one three](order_number)\n"
        '      - um [7 7 8 0 1]{"entity": "order_number"} I think\n'
        "  - intent: greet\n    examples: |\n      - hi there\n"
    )
    for style in ("typed", "sms"):
        (tmp_path / f"{style}.yml").write_text('version: "3.1"\nnlu: []\n')
    assert load_phrasings(tmp_path) == [
        Phrasing("spoken", "it's four zero two one three", "inform_order_number", "40213"),
        Phrasing("spoken", "um 7 7 8 0 1 I think", "inform_order_number", "77801"),
        Phrasing("spoken", "hi there", "greet", None),
    ]


def _parsed(intent: str, confidence: float, *ranked: str, entities=()) -> dict:
    ranking = [{"name": intent, "confidence": confidence}]
    ranking += [{"name": name, "confidence": 0.1} for name in ranked]
    return {
        "intent": {"name": intent, "confidence": confidence},
        "intent_ranking": ranking,
        "entities": list(entities),
    }


def _kind(expected: str, parsed: dict) -> str:
    return kind_of_mistake(outcome_of(Phrasing("sms", "text", expected), parsed))


@pytest.mark.unit
def test_mistakes_are_ranked_by_what_they_do_to_the_customer() -> None:
    # A person asked for, a text sent: an act nobody asked for.
    assert _kind("talk_to_human", _parsed("send_by_sms", 0.9)) == ACTS_WRONGLY
    # The same guess, but the confirmation gate asks first.
    gated = _parsed(CONFIRM_INTENT, 0.5, "send_by_sms", "talk_to_human")
    assert _kind("talk_to_human", gated) == CONFIRMS_WRONG_ACT
    assert _kind("talk_to_human", _parsed("help", 0.8)) == MISSES_ACT
    assert _kind("talk_to_human", _parsed("nlu_fallback", 0.4, "talk_to_human")) == MISSES_ACT
    assert _kind("greet", _parsed("nlu_fallback", 0.4, "greet")) == NOT_UNDERSTOOD
    assert _kind("greet", _parsed("help", 0.8)) == WRONG_ANSWER
    # Right, even when the gate asks first (one more turn, counted apart).
    assert _kind("send_by_sms", gated) is None
    assert _kind("greet", _parsed("greet", 0.9)) is None


@pytest.mark.unit
def test_a_refund_counts_as_confirmed_only_when_the_dialogue_confirms_it(monkeypatch) -> None:
    monkeypatch.setattr(nlu_heldout, "CONFIRMED_BY_DIALOGUE", frozenset())
    assert _kind("ask_refund_policy", _parsed("request_refund", 0.9)) == ACTS_WRONGLY
    monkeypatch.setattr(nlu_heldout, "CONFIRMED_BY_DIALOGUE", frozenset({"request_refund"}))
    assert _kind("ask_refund_policy", _parsed("request_refund", 0.9)) == CONFIRMS_WRONG_ACT


@pytest.mark.unit
def test_order_numbers_must_be_found_and_never_invented() -> None:
    number = {"entity": "order_number", "value": "four zero two one three"}
    right = outcome_of(
        Phrasing("spoken", "t", "inform_order_number", "40213"),
        _parsed("inform_order_number", 0.9, entities=[number]),
    )
    assert right.correct and right.order_number_right
    missed = outcome_of(
        Phrasing("spoken", "t", "inform_order_number", "40213"), _parsed("inform_order_number", 0.9)
    )
    assert missed.correct and not missed.order_number_right
    invented = outcome_of(Phrasing("sms", "t", "greet"), _parsed("greet", 0.9, entities=[number]))
    assert not invented.order_number_right


def test_the_trained_model_is_measured_per_style(trained_model: Path, tmp_path: Path) -> None:
    for style, text in (("typed", "Where is my order?"), ("sms", "hi"), ("spoken", "uh bye")):
        intent = {"typed": "check_order_status", "sms": "greet", "spoken": "goodbye"}[style]
        (tmp_path / f"{style}.yml").write_text(
            f'version: "3.1"\nnlu:\n  - intent: {intent}\n    examples: |\n      - {text}\n'
            "      - zxqv blorft wibble\n"
        )
    outcomes = nlu_heldout.evaluate(trained_model, tmp_path)
    reports = {r.style: r for r in nlu_heldout.style_reports(outcomes)}
    assert {style: r.phrasings for style, r in reports.items()} == {s: 2 for s in STYLES}
    # Nonsense is never its label; every report says so.
    assert all(r.correct <= 1 for r in reports.values())
    nonsense = [o for o in outcomes if o.phrasing.text == "zxqv blorft wibble"]
    assert all(not o.correct for o in nonsense)
    assert "zxqv blorft wibble" in "\n".join(nlu_heldout.mistake_lines(outcomes))


@pytest.mark.unit
def test_the_typo_stress_test_slips_one_long_word_per_phrasing() -> None:
    phrasings = [
        Phrasing("sms", "wheres my package", "check_order_status"),
        Phrasing("sms", "hi", "greet"),
    ]
    slipped = nlu_heldout.with_a_typo(phrasings)
    assert [p.intent for p in slipped] == ["check_order_status"]
    assert slipped[0].text.startswith("wheres my p") and slipped[0].text != "wheres my package"
    assert slipped == nlu_heldout.with_a_typo(phrasings)  # seeded: the same every run
