"""The held-out evaluation: the trained model against phrasings written as customers of each
channel really write and talk (``tests/nlu/``), kept out of training.

Cross-validation measures the model on its own training data, which is written the way the
designers write; customers text in shorthand and talk in transcripts. This evaluation parses
every held-out phrasing with the trained model (loaded in process, as ``/model/parse`` would
parse it) and reports, per channel style (typed, SMS shorthand, spoken transcript), the intent
accuracy and the order numbers found, with the confusions that matter listed first:

1. **acts on the wrong request**: the model chose an intent whose action does something on the
   customer's behalf (texting their phone, starting a refund, handing off or transferring, ending
   a call) for a phrasing that did not ask for it, and nothing asks first;
2. **asks to confirm the wrong act**: the same, but the assistant asks before acting (the
   ``nlu_confirm`` intent of the confirmation gate, or an act the dialogue always confirms);
3. **misses a request to act**: the customer asked for one of those acts and got something else
   (a caller asking for a person is not put through);
4. **not understood**: ``nlu_fallback`` (the LLM fallback answers);
5. **wrong answer**: any other confusion.

A phrasing counts as understood when the intent the model understood (the top of the ranking
under ``nlu_confirm``) is its label and the message did not fall back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

import yaml

from devtools.nlu_variations import typo
from omnichannel.nlu.confirmation import CONFIRM_INTENT, understood_intent
from omnichannel.orders import order_digits
from testkit.processes import ROOT

HELD_OUT = ROOT / "tests" / "nlu"
#: Channel style -> how the report names it; each has its file ``tests/nlu/<style>.yml``.
STYLES: Dict[str, str] = {
    "typed": "web chat, typed",
    "sms": "SMS shorthand",
    "spoken": "voice transcript",
}
FALLBACK_INTENT = "nlu_fallback"
ORDER_NUMBER = "order_number"

#: Intents whose action does something on the customer's behalf, and what it does.
ACTING_INTENTS: Dict[str, str] = {
    "talk_to_human": "hands the conversation to a person (a transfer on a call)",
    "send_by_sms": "texts the customer's phone",
    "request_refund": "starts a refund",
    "goodbye": "ends the call (on voice)",
}
#: Acting intents the dialogue itself always confirms before acting, whatever the confidence:
#: a refund starts only after "Do you want me to start a refund for order …?" is answered yes
#: (action_request_refund asks, action_start_refund acts; the story tests hold it).
CONFIRMED_BY_DIALOGUE: frozenset = frozenset({"request_refund"})

ACTS_WRONGLY = "acts on the wrong request"
CONFIRMS_WRONG_ACT = "asks to confirm the wrong act"
MISSES_ACT = "misses a request to act"
NOT_UNDERSTOOD = "not understood"
WRONG_ANSWER = "wrong answer"
#: Kinds of mistake, the ones that matter most first.
SEVERITY = (ACTS_WRONGLY, CONFIRMS_WRONG_ACT, MISSES_ACT, NOT_UNDERSTOOD, WRONG_ANSWER)

_ANNOTATION = re.compile(r"\[(?P<text>[^\]]+)\](?:\((?P<entity>[^)]+)\)|\{(?P<json>[^}]+)\})")


@dataclass(frozen=True)
class Phrasing:
    """One held-out phrasing: the text a customer sent, its intent and its order number."""

    style: str
    text: str
    intent: str
    #: The digits of the annotated order number, None when the phrasing has none.
    order_number: Optional[str] = None


@dataclass(frozen=True)
class Outcome:
    """What the model made of one phrasing."""

    phrasing: Phrasing
    #: The intent the dialogue acts on (``nlu_confirm`` or ``nlu_fallback`` included).
    predicted: str
    #: The intent the model understood: ``predicted`` unless that is ``nlu_confirm``.
    understood: str
    confidence: float
    #: The digits of every order number extracted.
    order_numbers: Sequence[str] = ()

    @property
    def correct(self) -> bool:
        return self.predicted != FALLBACK_INTENT and self.understood == self.phrasing.intent

    @property
    def order_number_right(self) -> bool:
        expected = [self.phrasing.order_number] if self.phrasing.order_number else []
        return list(self.order_numbers) == expected


def annotated_examples(path: Path) -> Iterable[tuple]:
    """``(intent, text, order number text or None)`` of every example in a Rasa NLU YAML file,
    annotations removed (``[40213](order_number)`` reads ``40213``)."""
    content = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    for block in content.get("nlu") or []:
        if "intent" not in block:
            continue
        for line in str(block.get("examples") or "").splitlines():
            line = line.strip()
            if not line.startswith("- "):
                continue
            example = line[2:]
            numbers = [
                m.group("text")
                for m in _ANNOTATION.finditer(example)
                if (m.group("entity") or "").strip() == ORDER_NUMBER
                or f'"{ORDER_NUMBER}"' in (m.group("json") or "")
            ]
            text = _ANNOTATION.sub(lambda m: m.group("text"), example)
            yield block["intent"], text, (numbers[0] if numbers else None)


def load_phrasings(folder: Path = HELD_OUT) -> List[Phrasing]:
    """Every held-out phrasing, style by style."""
    return [
        Phrasing(style, text, intent, order_digits(number) if number else None)
        for style in STYLES
        for intent, text, number in annotated_examples(folder / f"{style}.yml")
    ]


def comparable(text: str) -> str:
    """A phrasing as the overlap check compares it: lower case, letters, digits and spaces."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def outcome_of(phrasing: Phrasing, parsed: Mapping[str, Any]) -> Outcome:
    """Read Rasa's parse result of ``phrasing``."""
    intent = parsed.get("intent") or {}
    predicted = intent.get("name") or FALLBACK_INTENT
    ranking = parsed.get("intent_ranking") or []
    numbers = [
        order_digits(str(entity.get("value")))
        for entity in parsed.get("entities") or []
        if entity.get("entity") == ORDER_NUMBER
    ]
    return Outcome(
        phrasing=phrasing,
        predicted=predicted,
        understood=understood_intent(predicted, ranking) or predicted,
        confidence=float(intent.get("confidence") or 0.0),
        order_numbers=tuple(numbers),
    )


def kind_of_mistake(outcome: Outcome) -> Optional[str]:
    """Which of :data:`SEVERITY` this outcome is, None when it is right."""
    if outcome.correct:
        return None
    expected, understood = outcome.phrasing.intent, outcome.understood
    if outcome.predicted == FALLBACK_INTENT:
        return MISSES_ACT if expected in ACTING_INTENTS else NOT_UNDERSTOOD
    if understood in ACTING_INTENTS:
        confirmed = outcome.predicted == CONFIRM_INTENT or understood in CONFIRMED_BY_DIALOGUE
        return CONFIRMS_WRONG_ACT if confirmed else ACTS_WRONGLY
    if expected in ACTING_INTENTS:
        return MISSES_ACT
    return WRONG_ANSWER


@dataclass
class StyleReport:
    style: str
    phrasings: int
    correct: int
    #: Correct phrasings whose act the assistant confirms first (one more turn).
    confirmed: int
    order_numbers: int
    order_numbers_right: int
    mistakes: Dict[str, int] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.phrasings if self.phrasings else 0.0

    @property
    def order_number_accuracy(self) -> float:
        return self.order_numbers_right / self.order_numbers if self.order_numbers else 1.0


def style_reports(outcomes: Sequence[Outcome]) -> List[StyleReport]:
    reports = []
    for style in STYLES:
        mine = [o for o in outcomes if o.phrasing.style == style]
        numbered = [o for o in mine if o.phrasing.order_number or o.order_numbers]
        kinds = [kind_of_mistake(o) for o in mine]
        reports.append(
            StyleReport(
                style=style,
                phrasings=len(mine),
                correct=sum(o.correct for o in mine),
                confirmed=sum(o.correct and o.predicted == CONFIRM_INTENT for o in mine),
                order_numbers=len(numbered),
                order_numbers_right=sum(o.order_number_right for o in numbered),
                mistakes={kind: kinds.count(kind) for kind in SEVERITY if kind in kinds},
            )
        )
    return reports


def parse_all(model: Path, texts: Sequence[str]) -> List[Dict[str, Any]]:
    """Rasa's parse of each text by the trained model, as ``/model/parse`` answers."""
    agent = _agent(model)

    async def parse() -> List[Dict[str, Any]]:
        return [await agent.parse_message(text) for text in texts]

    return asyncio.run(parse())


@functools.lru_cache(maxsize=1)
def _agent(model: Path) -> Any:
    """The model loaded once for every evaluation of this process (held-out, typo stress)."""
    from rasa.core.agent import Agent
    from rasa.utils.log_utils import configure_structlog

    configure_structlog(logging.WARNING)
    return Agent.load(str(model))


def evaluate(model: Path, folder: Path = HELD_OUT) -> List[Outcome]:
    phrasings = load_phrasings(folder)
    parsed = parse_all(model, [p.text for p in phrasings])
    return [outcome_of(p, result) for p, result in zip(phrasings, parsed, strict=True)]


#: Seed of the typo stress test: the same typos every run.
TYPO_SEED = 7
_LONG_WORD = re.compile(r"[A-Za-z]{5,}")


def with_a_typo(phrasings: Sequence[Phrasing], seed: int = TYPO_SEED) -> List[Phrasing]:
    """The phrasings that have a word of five letters or more, each with one typo in its
    longest such word (the generator's kind of slip): how spelling-tolerant the model is."""
    rnd = random.Random(seed)
    slipped = []
    for phrasing in phrasings:
        words = list(_LONG_WORD.finditer(phrasing.text))
        if not words:
            continue
        word = max(words, key=lambda m: len(m.group()))
        text = phrasing.text[: word.start()] + typo(word.group(), rnd) + phrasing.text[word.end() :]
        slipped.append(Phrasing(phrasing.style, text, phrasing.intent, phrasing.order_number))
    return slipped


def typo_accuracy(model: Path, folder: Path = HELD_OUT) -> tuple:
    """``(phrasings, accuracy)`` of the held-out phrasings with one typo each."""
    slipped = with_a_typo(load_phrasings(folder))
    parsed = parse_all(model, [p.text for p in slipped])
    outcomes = [outcome_of(p, r) for p, r in zip(slipped, parsed, strict=True)]
    return len(outcomes), (sum(o.correct for o in outcomes) / len(outcomes) if outcomes else 1.0)


def mistake_lines(outcomes: Sequence[Outcome]) -> List[str]:
    """One line per mistake, grouped by kind, the kinds that matter most first."""
    lines = []
    by_kind: Dict[str, List[Outcome]] = {}
    for outcome in outcomes:
        kind = kind_of_mistake(outcome)
        if kind:
            by_kind.setdefault(kind, []).append(outcome)
    for kind in SEVERITY:
        found = by_kind.get(kind) or []
        if not found:
            continue
        lines.append(f"{kind.upper()} ({len(found)}):")
        for o in sorted(found, key=lambda o: (o.phrasing.intent, o.phrasing.style)):
            shown = (
                o.understood if o.predicted == o.understood else f"{o.predicted}({o.understood})"
            )
            lines.append(
                f"  [{o.phrasing.style:<6}] {o.phrasing.intent} -> {shown} "
                f"{o.confidence:.2f}  {o.phrasing.text!r}"
            )
    return lines


def report_json(outcomes: Sequence[Outcome]) -> Dict[str, Any]:
    return {
        "styles": [
            {**asdict(r), "accuracy": r.accuracy, "order_number_accuracy": r.order_number_accuracy}
            for r in style_reports(outcomes)
        ],
        "mistakes": [
            {
                "kind": kind_of_mistake(o),
                "style": o.phrasing.style,
                "text": o.phrasing.text,
                "intent": o.phrasing.intent,
                "predicted": o.predicted,
                "understood": o.understood,
                "confidence": round(o.confidence, 4),
            }
            for o in outcomes
            if kind_of_mistake(o)
        ],
        "order_number_errors": [
            {
                "style": o.phrasing.style,
                "text": o.phrasing.text,
                "expected": o.phrasing.order_number,
                "extracted": list(o.order_numbers),
            }
            for o in outcomes
            if (o.phrasing.order_number or o.order_numbers) and not o.order_number_right
        ],
    }
