"""The channel vocabulary: the one place that names the channels and maps one naming onto the other.

Three namings exist, each where Rasa's conventions put it:

- **connector names** (``vapi``, ``twilio_sms``, ``webchat``): an input channel's ``name()`` and
  its webhook path (``/webhooks/<name>/…``); the ``input_channel`` Rasa stores on each message;
- **output names**: an output channel's ``name()``, which is what Rasa matches a response's
  ``channel:`` variation against (``ResponseVariationFilter`` compares the two strings). Each
  connector's output has its connector's name, except WhatsApp: it arrives through the Twilio
  webhook (input channel ``twilio_sms``) but its turns are answered by an output channel named
  ``whatsapp``, so designers write ``channel: whatsapp`` for the WhatsApp form of a response;
- **channel kinds** (``voice``, ``sms``, ``whatsapp``, ``chat``): what the dialogue cares about;
  the ``channel`` slot, ``metadata.channel`` on every user message, the LLM's labels, metric
  labels and the web chat's badges.

A WhatsApp turn with no ``channel: whatsapp`` variation gets the response's default variation
(the one without ``channel:``), never the ``twilio_sms`` one: WhatsApp shows what chat shows
(formatting, buttons, pictures), not SMS's plain text and numbered options.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

VOICE = "voice"
SMS = "sms"
WHATSAPP = "whatsapp"
CHAT = "chat"
#: Every channel kind, in the order the product presents them.
KINDS = (VOICE, SMS, WHATSAPP, CHAT)
#: The kinds whose messages go through Twilio's Messages API to a phone number.
MESSAGING_KINDS = (SMS, WHATSAPP)

VAPI = "vapi"
TWILIO_SMS = "twilio_sms"
WEBCHAT = "webchat"

#: Connector name (input channel ``name()``) -> the kind of its messages when they say none.
KIND_OF_CONNECTOR = {VAPI: VOICE, TWILIO_SMS: SMS, WEBCHAT: CHAT}
#: Channel kind -> the connector that receives it (WhatsApp comes through the Twilio webhook).
CONNECTOR_OF_KIND = {VOICE: VAPI, SMS: TWILIO_SMS, WHATSAPP: TWILIO_SMS, CHAT: WEBCHAT}
#: Channel kind -> the output channel ``name()`` its turns are answered by: the name a
#: response's ``channel:`` variation must carry to be chosen for that kind.
OUTPUT_OF_KIND = {VOICE: VAPI, SMS: TWILIO_SMS, WHATSAPP: WHATSAPP, CHAT: WEBCHAT}
#: Output name -> channel kind; its keys are every valid ``channel:`` of a variation.
KIND_OF_OUTPUT = {output: kind for kind, output in OUTPUT_OF_KIND.items()}
#: How a channel kind is shown to people (web chat badges, the viewer).
LABELS = {VOICE: "Voice", SMS: "SMS", WHATSAPP: "WhatsApp", CHAT: "Chat"}

#: The prefix Twilio puts on WhatsApp addresses (``From=whatsapp:+1…``).
WHATSAPP_PREFIX = "whatsapp:"


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


def messaging_address(kind: str, e164: str) -> str:
    """The Messages API address of a phone number on a messaging kind: ``+1…`` for SMS,
    ``whatsapp:+1…`` for WhatsApp."""
    if kind == WHATSAPP:
        return WHATSAPP_PREFIX + e164
    if kind == SMS:
        return e164
    raise ValueError(f"{kind!r} is not a messaging channel kind")


def kind_of_address(address: str) -> str:
    """The messaging kind of a Messages API address (``whatsapp:+1…`` or ``+1…``)."""
    return WHATSAPP if address.lower().startswith(WHATSAPP_PREFIX) else SMS
