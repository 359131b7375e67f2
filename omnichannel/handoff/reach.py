"""Where a person from the team can answer a customer: the one judgement the bot's promise ("a
person will text you here") and the agent's reply box both rely on. Pure.

- **SMS** when Twilio is configured, the conversation has a phone number and it has not
  opted out (STOP);
- **WhatsApp** likewise, for a customer who has written to us on WhatsApp: the one sending path
  (:meth:`omnichannel.sms_sender.SmsSender.plan`) sends in WhatsApp's 24-hour window, else holds
  the reply until the customer next writes there;
- **chat** when the customer has a web chat identity (a signed-in site user, or an anonymous
  visitor who chatted): an agent's reply lands in the conversation, shown live in every open
  chat tab and in the history when they next open the chat;
- **voice** never: the assistant cannot call anyone (outbound calls do not exist); a caller is
  answered by text or chat, or put through to ``HANDOFF_PHONE_NUMBER`` while on the call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from omnichannel.channels import CHAT, SMS, VOICE, WHATSAPP
from omnichannel.identity import ContactProfile
from omnichannel.settings import Settings

#: Channels an agent can reply on, in the order they are offered.
REPLY_CHANNELS = (SMS, WHATSAPP, CHAT)


@dataclass(frozen=True)
class Reach:
    """The channels a reply can go out on (``available``), why the others cannot
    (``unavailable``: channel → reason, shown to agents), and the one to use by default."""

    available: Tuple[str, ...]
    unavailable: Dict[str, str]
    default: Optional[str]

    @property
    def reachable(self) -> bool:
        return bool(self.available)


def twilio_configured(settings: Settings) -> bool:
    return bool(
        settings.twilio_account_sid
        and settings.twilio_auth_token
        and (settings.twilio_phone_number or settings.twilio_messaging_service_sid)
    )


def reach(profile: ContactProfile, settings: Settings, last_channel: Optional[str]) -> Reach:
    """Where ``profile``'s customer can be answered; by default on ``last_channel`` (the one
    they last wrote or spoke on), a call's by SMS (what the caller is told: "a person will
    text you at this number"), else the first available."""
    unavailable: Dict[str, str] = {}
    for channel in (SMS, WHATSAPP):
        if not twilio_configured(settings):
            unavailable[channel] = "Twilio is not set up (its settings are missing)"
        elif not profile.phone:
            unavailable[channel] = "no phone number on file"
        elif profile.sms_opted_out:
            unavailable[channel] = "the customer opted out of our messages (STOP)"
    if WHATSAPP not in unavailable and WHATSAPP not in profile.channels:
        unavailable[WHATSAPP] = "the customer has never written to us on WhatsApp"
    if not (profile.user_id or CHAT in profile.channels):
        unavailable[CHAT] = "the customer has never used the web chat"
    available = tuple(channel for channel in REPLY_CHANNELS if channel not in unavailable)
    wanted = SMS if last_channel == VOICE else last_channel
    default = wanted if wanted in available else (available[0] if available else None)
    return Reach(available, unavailable, default)
