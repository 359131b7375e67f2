"""Redaction of what customers should not have typed: payment card numbers, email addresses and
the business's own patterns, before text leaves for an LLM provider, a log line, a trace or the
insight page.

- **Card numbers**: 13 to 19 digits, in groups separated by single spaces or hyphens, whose Luhn
  checksum holds (an order number or a date does not), become ``[card number]``.
- **Email addresses** become ``[email]``.
- **The business's patterns**: ``REDACT_PATTERNS``, a JSON object of name → regular expression
  (``{"iban": "\\\\b[A-Z]{2}\\\\d{2}[A-Z0-9]{11,30}\\\\b"}``); each match becomes ``[name]``.
  A pattern that does not compile stops start-up with its name.

What the event log keeps is the business's choice: ``EVENT_LOG_TEXT=redacted`` (the default)
redacts a customer's message before Rasa sees it, so the event log, the viewer, the web chat's
history and every export hold the redacted text; ``EVENT_LOG_TEXT=original`` keeps what was
typed in the event log (for a business that must), and redaction then happens at each exit.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Pattern, Tuple

from omnichannel.errors import ConfigError

CARD_MARK = "[card number]"
EMAIL_MARK = "[email]"
#: ``EVENT_LOG_TEXT`` values.
REDACTED = "redacted"
ORIGINAL = "original"

# Digits in groups separated by one space or hyphen: 13-19 digits in all, not glued to other
# digits or letters (a longer id is not a card).
_CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})+")
_PATTERN_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return CARD_MARK if luhn_valid(digits) else match.group(0)


@dataclass(frozen=True)
class Redactor:
    """Redacts card numbers, emails and ``patterns`` (name, compiled expression) from text."""

    patterns: Tuple[Tuple[str, Pattern[str]], ...] = ()
    #: What the event log keeps: REDACTED or ORIGINAL.
    event_log_text: str = REDACTED

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> Redactor:
        env = os.environ if env is None else env
        raw = (env.get("REDACT_PATTERNS") or "").strip()
        patterns: List[Tuple[str, Pattern[str]]] = []
        if raw:
            try:
                named = json.loads(raw)
            except ValueError:
                raise ConfigError(
                    "REDACT_PATTERNS must be a JSON object of name to regular expression"
                ) from None
            if not isinstance(named, dict):
                raise ConfigError(
                    "REDACT_PATTERNS must be a JSON object of name to regular expression"
                )
            for name, expression in named.items():
                if not isinstance(name, str) or not _PATTERN_NAME.fullmatch(name):
                    raise ConfigError(
                        f"REDACT_PATTERNS: name {name!r} must match {_PATTERN_NAME.pattern}"
                    )
                try:
                    patterns.append((name, re.compile(str(expression))))
                except re.error as error:
                    raise ConfigError(
                        f"REDACT_PATTERNS: {name!r} does not compile: {error}"
                    ) from None
        keep = (env.get("EVENT_LOG_TEXT") or REDACTED).strip().lower()
        if keep not in (REDACTED, ORIGINAL):
            raise ConfigError(f"EVENT_LOG_TEXT must be {REDACTED} or {ORIGINAL}, got {keep!r}")
        return cls(tuple(patterns), keep)

    def redact(self, text: str) -> str:
        """``text`` with every card number, email and configured pattern replaced by its mark."""
        if not text:
            return text
        if any(char.isdigit() for char in text):
            text = _CARD.sub(_card, text)
        if "@" in text:
            text = _EMAIL.sub(EMAIL_MARK, text)
        for name, pattern in self.patterns:
            text = pattern.sub(f"[{name}]", text)
        return text

    @property
    def redacts_event_log(self) -> bool:
        return self.event_log_text == REDACTED


_cached: Dict[Tuple[Optional[str], Optional[str]], Redactor] = {}


def redactor() -> Redactor:
    """The process's redactor, parsed again only when its variables change."""
    key = (os.environ.get("REDACT_PATTERNS"), os.environ.get("EVENT_LOG_TEXT"))
    found = _cached.get(key)
    if found is None:
        found = Redactor.from_env()
        _cached.clear()
        _cached[key] = found
    return found


def redact(text: str) -> str:
    """``text`` redacted by the process's :func:`redactor`."""
    return redactor().redact(text)
