"""Cross-channel hand-off: "text me that" during a call or a chat.

``action_send_by_sms`` works out what "that" is (the tracking link, the refund policy, the part
of a message the caller did not hear, a picture a call could only mention), sends it to the
conversation's phone through :meth:`~omnichannel.sms_sender.SmsSender.send_to_customer` (which
refuses opted-out numbers and never double-sends) on the messaging channel the customer last
wrote on: WhatsApp in its 24-hour window, or as the response's approved WhatsApp template
outside it, else by SMS (asking for the text is consent to it), confirms on the current channel
how it went ("I've texted…", "I've sent … on WhatsApp"), and returns the text as a
``BotUttered`` event with ``metadata.channel`` the channel it went on: the content is then part
of the one conversation every channel shows (live channels do not say it again, see
``BotMessage.is_for``), and the customer's reply simply continues it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from rasa_sdk import Action, Tracker
from rasa_sdk.events import BotUttered, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.barge_in import pending_unheard
from actions.business import OFFER_TRACKING_LINK, tracking_sms, verified_customer
from actions.formatting import current_channel
from omnichannel.channels import MESSAGING_KINDS, SMS, TWILIO_SMS, WHATSAPP
from omnichannel.orders import VerifiedIdentity, find_order
from omnichannel.rendering.messages import BotMessage
from omnichannel.sms_sender import NoPhoneOnFile, SmsOptedOut, SmsSender, SmsSendFailed
from omnichannel.textable import sms_text, sms_topic
from omnichannel.turn_context import OFFER_MEDIA, OFFER_UNHEARD
from omnichannel.whatsapp_templates import TemplateRef, template_for

logger = logging.getLogger(__name__)

SENT_BY = "action_send_by_sms"
_ASKS_FOR_LINK = re.compile(r"\b(track\w*|link|url)\b", re.IGNORECASE)
_ASKS_FOR_POLICY = re.compile(r"\b(refunds?|returns?|polic\w*)\b", re.IGNORECASE)
_ASKS_FOR_REST = re.compile(r"\b(rest|remainder|end)\b", re.IGNORECASE)


@dataclass(frozen=True)
class TextContent:
    """What to text: the message body and how to name it to the customer."""

    text: str
    topic: str
    #: True when this is the unheard remainder of a cut-off message (delivered once).
    unheard: bool = False
    #: A picture or file to send with it (what a call could only mention).
    media: Optional[str] = None
    #: The approved WhatsApp template that stands for it outside the 24-hour window.
    template: Optional[TemplateRef] = None


def _response_text(domain: Dict[str, Any], response: str) -> Optional[str]:
    """What a response says by SMS: its ``sms_text`` metadata, else its SMS variation, else its
    plain one (no ``channel``/``condition``), as written in domain.yml. (A response said on a
    call was said in its voice form; the text should read as written.)"""
    variations = [
        v
        for v in (domain.get("responses") or {}).get(response) or []
        if not v.get("condition") and v.get("channel") in (None, TWILIO_SMS)
    ]
    for variation in variations:
        declared_text = sms_text({"metadata": {"metadata": variation.get("metadata")}})
        if declared_text:
            return declared_text
    for channel in (TWILIO_SMS, None):
        for variation in variations:
            if variation.get("channel") == channel and variation.get("text"):
                return variation["text"]
    return None


def _tracking_link(tracker: Tracker, customer: VerifiedIdentity) -> Optional[TextContent]:
    """The latest tracking link the bot showed (only ever for the customer's own order), else
    that of the order in the conversation if it is the customer's."""
    for event in reversed(tracker.events):
        metadata = event.get("metadata") or {}
        if event.get("event") == "bot" and metadata.get("sent_by") != SENT_BY:
            text = sms_text(event)
            if text:
                return TextContent(text, sms_topic(event) or "the link")
    order = find_order(tracker.get_slot("order_number"), customer)
    link = tracking_sms(order) if order else None
    return TextContent(link, "the tracking link") if link else None


def _policy(domain: Dict[str, Any]) -> Optional[TextContent]:
    text = _response_text(domain, "utter_refund_policy")
    template = template_for(domain.get("responses") or {}, "utter_refund_policy", {})
    return TextContent(text, "the refund policy", template=template) if text else None


def _media(tracker: Tracker) -> Optional[TextContent]:
    """The latest picture or file the bot showed (a call spoke of it, offering to text it)."""
    for event in reversed(tracker.events):
        if event.get("event") != "bot":
            continue
        data = event.get("data") or {}
        media = data.get("image") or data.get("attachment")
        if isinstance(media, str) and media:
            topic = "the picture" if data.get("image") else "the file"
            return TextContent(str(event.get("text") or ""), topic, media=media)
    return None


def _unheard(tracker: Tracker) -> Optional[TextContent]:
    unheard = pending_unheard(tracker)
    if unheard is None:
        return None
    return TextContent(unheard["text"], f"the rest of {unheard['topic']}", unheard=True)


def content_to_text(
    tracker: Tracker, domain: Dict[str, Any], customer: VerifiedIdentity
) -> Optional[TextContent]:
    """What "text me that" means here.

    What the customer named wins ("text me the tracking link", "the refund policy", "the
    rest"); then what the bot just offered; then the latest message worth texting, newest
    first: one that declares it can be texted (omnichannel/textable.py: an action's
    ``sms_text``, such as a tracking link, or a response's ``sms_topic`` in domain.yml, sent in
    its SMS form; its unheard remainder when the caller was cut off during it).
    """
    asked = (tracker.latest_message or {}).get("text") or ""
    if _ASKS_FOR_LINK.search(asked):
        return _tracking_link(tracker, customer)
    if _ASKS_FOR_REST.search(asked) and pending_unheard(tracker):
        return _unheard(tracker)
    if _ASKS_FOR_POLICY.search(asked):
        return _policy(domain)
    offer = tracker.get_slot("offer")
    if offer == OFFER_TRACKING_LINK:
        return _tracking_link(tracker, customer)
    if offer == OFFER_UNHEARD:
        return _unheard(tracker)
    if offer == OFFER_MEDIA:
        return _media(tracker)
    unheard = pending_unheard(tracker)
    for event in reversed(tracker.events):
        if event.get("event") != "bot":
            continue
        metadata = event.get("metadata") or {}
        if metadata.get("sent_by") == SENT_BY:
            continue
        text, topic = sms_text(event), sms_topic(event)
        if text:
            return TextContent(text, topic or "the link")
        if topic:
            if unheard is not None and unheard.get("topic") == topic:
                return _unheard(tracker)
            response = metadata.get("utter_action")
            written = (_response_text(domain, response) if response else None) or event.get("text")
            template = template_for(domain.get("responses") or {}, response, tracker.slots)
            return TextContent(written, topic, template=template) if written else None
    return _unheard(tracker)


def _cleared(tracker: Tracker, content: TextContent) -> List[EventType]:
    events: List[EventType] = []
    if tracker.get_slot("offer"):
        events.append(SlotSet("offer", None))
    if content.unheard:
        events.append(SlotSet("unheard", None))
    return events


#: The confirmation of each way "that" can go (its response), and of a message held for
#: WhatsApp's window.
_CONFIRMATION = {SMS: "utter_sms_sent", WHATSAPP: "utter_sent_on_whatsapp"}


class ActionSendBySms(Action):
    def name(self) -> str:
        return "action_send_by_sms"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        content = content_to_text(tracker, domain, await verified_customer(tracker))
        if content is None:
            dispatcher.utter_message(response="utter_nothing_to_text")
            return [SlotSet("offer", None)] if tracker.get_slot("offer") else []
        channel = current_channel(tracker)
        if channel in MESSAGING_KINDS:
            # Already texting: the answer is the text.
            dispatcher.utter_message(text=content.text, image=content.media, topic=content.topic)
            return _cleared(tracker, content)
        messages = [BotMessage(text=content.text, image=content.media)]
        try:
            delivery = await SmsSender.from_settings().send_to_customer(
                tracker.sender_id, messages, template=content.template, requested=True
            )
        except SmsOptedOut:
            dispatcher.utter_message(response="utter_sms_opted_out")
            return []
        except NoPhoneOnFile:
            dispatcher.utter_message(response="utter_sms_no_phone")
            return []
        except SmsSendFailed as error:
            logger.warning("text for %s not sent: %s", tracker.sender_id, error)
            dispatcher.utter_message(response="utter_sms_failed")
            return []
        if delivery.held:
            dispatcher.utter_message(response="utter_whatsapp_held", sms_topic=content.topic)
            return _cleared(tracker, content)
        dispatcher.utter_message(response=_CONFIRMATION[delivery.channel], sms_topic=content.topic)
        record = BotUttered(
            text=content.text,
            data={"image": content.media} if content.media else {},
            metadata={
                "channel": delivery.channel,
                "sent_by": SENT_BY,
                "message_sids": list(delivery.sids),
                "route": delivery.route,
                "topic": content.topic,
            },
        )
        return [record, *_cleared(tracker, content)]
