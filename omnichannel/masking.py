"""Personal data as logs, errors, metrics and pages may show it: phone-number-like digit runs in
any text reduced to their first and last digits (:func:`mask`), identifiers cut short
(:func:`mask_identifier`), and a conversation id that a stock channel may have made of a phone
number (:func:`mask_conversation_id`). The one place that decides how much of a customer's
number or id is shown anywhere.
"""

from __future__ import annotations

import re

# 7 or more digits, optionally led by "+", with the separators people write between groups.
# Not glued to other word characters, so message SIDs and other hex ids stay intact; dates, long
# integers and over-long "numbers" are masked too: in logs, masking too much is the safer mistake.
_PHONE_LIKE = re.compile(r"(?<![\w+])\+?\d(?:[\s().\-]{0,3}\d){6,}(?!\w)")


def _mask_digits(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    tail = 4 if len(digits) >= 10 else 2
    head = max(0, min(4, len(digits) - tail - 3))
    plus = "+" if text.startswith("+") else ""
    return f"{plus}{digits[:head]}***{digits[-tail:]}"


def mask(text: str) -> str:
    """``text`` with every phone-number-like digit run reduced to its first and last digits,
    so log lines and error messages can quote payloads without quoting customers' numbers."""
    return _PHONE_LIKE.sub(_mask_digits, text)


def mask_identifier(value: str, shown: int) -> str:
    return value[: min(shown, len(value) // 2)] + "***"


def mask_conversation_id(conversation_id: str) -> str:
    """Conversation ids are opaque, but a stock channel may use a phone number as sender id."""
    if len(conversation_id) <= 6:
        return conversation_id
    return conversation_id[:4] + "…" + conversation_id[-2:]
