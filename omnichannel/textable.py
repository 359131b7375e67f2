"""What "text me that" can send: the SMS form a bot message declares, in one place.

A **response** declares it in ``domain.yml``, as Rasa's response metadata::

    utter_refund_policy:
      - text: "Here's our refund policy. …"
        metadata:
          sms_topic: "the refund policy"   # how offers and confirmations name it (required)
          sms_text: "…"                    # what is texted (default: the response's SMS form)

An **action** declares it on the message it sends:
``dispatcher.utter_message(text=…, sms_text=link, sms_topic="the tracking link")``.

Rasa stores the two differently: an action's keyword arguments at the top of the bot event's
metadata, a response's ``metadata:`` one level down (``metadata.metadata``, next to
``utter_action``). :func:`declared` reads both, the action's winning.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

SMS_TOPIC = "sms_topic"
SMS_TEXT = "sms_text"


def declared(event: Mapping[str, Any]) -> Dict[str, Any]:
    """A bot event's metadata with its response's own ``metadata:`` merged in."""
    metadata = event.get("metadata")
    if not isinstance(metadata, Mapping):
        return {}
    nested = metadata.get("metadata")
    return {**(nested if isinstance(nested, Mapping) else {}), **metadata}


def sms_topic(event: Mapping[str, Any]) -> Optional[str]:
    """How the message is named when it is offered or texted ("the refund policy"), if it
    declares that it can be texted."""
    topic = declared(event).get(SMS_TOPIC)
    return topic if isinstance(topic, str) and topic.strip() else None


def sms_text(event: Mapping[str, Any]) -> Optional[str]:
    """The text the message declares for SMS, if any."""
    text = declared(event).get(SMS_TEXT)
    return text if isinstance(text, str) and text.strip() else None
