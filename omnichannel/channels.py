"""The channel vocabulary: the one place that names the channels and maps one naming onto the other.

Two namings exist, each where Rasa's conventions put it:

- **connector names** (``vapi``, ``twilio_sms``, ``webchat``): an input channel's ``name()``, its
  webhook path and what designers write in a response's ``channel:`` variation;
- **channel kinds** (``voice``, ``sms``, ``chat``): what the dialogue cares about; the
  ``channel`` slot, ``metadata.channel`` on every user message, the LLM's labels and the web
  chat's badges.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

VOICE = "voice"
SMS = "sms"
CHAT = "chat"
#: Every channel kind, in the order the product presents them.
KINDS = (VOICE, SMS, CHAT)

VAPI = "vapi"
TWILIO_SMS = "twilio_sms"
WEBCHAT = "webchat"

#: Connector name (input/output channel ``name()``) -> channel kind.
KIND_OF_CONNECTOR = {VAPI: VOICE, TWILIO_SMS: SMS, WEBCHAT: CHAT}
#: Channel kind -> the connector that serves it.
CONNECTOR_OF_KIND = {kind: connector for connector, kind in KIND_OF_CONNECTOR.items()}
#: How a channel kind is shown to people (web chat badges, the viewer).
LABELS = {VOICE: "Voice", SMS: "SMS", CHAT: "Chat"}


def kind_of(metadata: Optional[Mapping[str, Any]], input_channel: Optional[str]) -> Optional[str]:
    """The channel kind of a user message: its ``metadata.channel`` when it names a kind, else
    the kind of the connector it came in on; None for typed text of unknown origin (the REST
    channel, ``rasa shell``)."""
    claimed = metadata.get("channel") if isinstance(metadata, Mapping) else None
    if claimed in KINDS:
        return str(claimed)
    return KIND_OF_CONNECTOR.get(input_channel or "")


def kind_of_event(event: Mapping[str, Any]) -> Optional[str]:
    """The channel kind of a stored user or bot event (Rasa's event dict); bot events carry no
    input channel, so theirs is their ``metadata.channel`` or None."""
    return kind_of(event.get("metadata"), event.get("input_channel"))
