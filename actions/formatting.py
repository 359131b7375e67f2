"""Each channel's form of what an action says.

Designers' responses get their channel form from ``channel:`` variations in domain.yml and from
the connectors' renderers. Actions that compose text (order status, tracking, the LLM fallback)
write it once per channel with :class:`ChannelReply`, and :meth:`ChannelReply.send` utters the
form for the conversation's current channel. The limits each form is held to live in
:mod:`omnichannel.rendering.styles`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.channel import channel_of
from omnichannel.channels import CHAT, SMS, VOICE, WHATSAPP
from omnichannel.rendering.styles import DEFAULT_CHANNEL, STYLES, fit


def current_channel(tracker: Tracker) -> str:
    """The conversation's current channel kind: the `channel` slot, else the latest message's."""
    slot = tracker.get_slot("channel")
    if slot in STYLES:
        return slot
    return channel_of(tracker) or DEFAULT_CHANNEL


@dataclass
class ChannelReply:
    """One answer written once per channel; :meth:`send` utters the current channel's form.

    ``voice`` and ``sms`` fall back to ``chat`` (made plain and held to their limits by
    :func:`omnichannel.rendering.styles.fit`) when an action does not write them; WhatsApp gets
    the chat form (its renderer turns the markdown into WhatsApp's formatting, and buttons into
    tappable options or, for web addresses, links). ``buttons`` are sent with the chat and
    WhatsApp forms only. ``metadata`` goes with the message into the tracker
    (e.g. ``sms_text``, what "text me that" sends when this message is the latest thing worth
    texting).
    """

    chat: str
    voice: Optional[str] = None
    sms: Optional[str] = None
    buttons: Sequence[Dict[str, Any]] = ()
    metadata: Dict[str, Any] = field(default_factory=dict)

    def text_for(self, channel: str) -> str:
        if channel == VOICE:
            return fit(self.voice if self.voice is not None else self.chat, VOICE)
        if channel == SMS:
            return fit(self.sms if self.sms is not None else self.chat, SMS)
        if channel == WHATSAPP:
            return fit(self.chat, WHATSAPP)
        return self.chat

    def send(self, dispatcher: CollectingDispatcher, tracker: Tracker) -> str:
        """Utter the form for the conversation's current channel; returns the channel kind."""
        channel = current_channel(tracker)
        dispatcher.utter_message(
            text=self.text_for(channel),
            buttons=list(self.buttons) if channel in (CHAT, WHATSAPP) else None,
            **self.metadata,
        )
        return channel
