"""The confirmation gate: an intent that acts on the customer's behalf is acted on only when the
classifier is sure enough of it; below its threshold the assistant asks first.

Rasa's FallbackClassifier replaces a message's intent with ``nlu_fallback`` below one threshold
for every intent. Intents whose action does something (hand the conversation to a person,
transfer or end a call, text the customer's phone) need more: a wrong guess is not an unhelpful
answer but an act nobody asked for. The gate applies a threshold per such intent; below it the
message's intent becomes :data:`CONFIRM_INTENT`, with the intent it stands for kept at the top
of the ranking under it (as the FallbackClassifier keeps its). Rules then answer
``nlu_confirm`` with a question ("Do you want me to put you through to a person?") and the yes
with the act.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

#: The intent the gate gives a message whose acting intent needs confirming.
CONFIRM_INTENT = "nlu_confirm"
#: Rasa's FallbackClassifier's intent.
FALLBACK_INTENT = "nlu_fallback"
#: Intents that stand for another one, which is then first in the ranking below them.
MARKER_INTENTS = frozenset({CONFIRM_INTENT, FALLBACK_INTENT})


def thresholds_from(config: Mapping[str, Any]) -> Dict[str, float]:
    """Validated ``{intent: threshold}`` from a component config's ``thresholds`` mapping."""
    raw = config.get("thresholds") or {}
    if not isinstance(raw, Mapping):
        raise ValueError("thresholds must map intent names to numbers between 0 and 1")
    thresholds = {}
    for intent, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"threshold of {intent!r} must be a number between 0 and 1")
        if intent in MARKER_INTENTS:
            raise ValueError(f"{intent!r} cannot be confirmed: it is not a customer's intent")
        thresholds[str(intent)] = float(value)
    return thresholds


def gated(
    intent: Mapping[str, Any],
    ranking: Sequence[Mapping[str, Any]],
    thresholds: Mapping[str, float],
) -> Optional[Tuple[Dict[str, Any], List[Dict[str, Any]]]]:
    """The message's new intent and ranking when its intent must be confirmed, else None."""
    name = str(intent.get("name") or "")
    confidence = float(intent.get("confidence") or 0.0)
    if name not in thresholds or confidence >= thresholds[name]:
        return None
    confirm = {"name": CONFIRM_INTENT, "confidence": confidence}
    rest = [dict(entry) for entry in ranking if entry.get("name") != CONFIRM_INTENT]
    if not rest or rest[0].get("name") != name:
        rest.insert(0, {"name": name, "confidence": confidence})
    return confirm, [confirm, *rest]


def understood_intent(
    predicted: Optional[str], ranking: Sequence[Mapping[str, Any]]
) -> Optional[str]:
    """The customer's intent as the model understood it: ``predicted`` unless that is
    ``nlu_confirm`` or ``nlu_fallback``, then the first intent ranked under it."""
    if predicted not in MARKER_INTENTS:
        return predicted
    return next(
        (entry.get("name") for entry in ranking if entry.get("name") not in MARKER_INTENTS),
        None,
    )
