"""The shop's business actions: order status, tracking and refunds, in each channel's form.

Order status and tracking are written once per channel with :class:`ChannelReply`: a caller
hears the date as it is said ("Thursday, November 26th") and is offered the tracking link by
text (the ``offer`` slot then lets a "yes" send it); a texter gets one short line with the link;
the web chat gets markdown and a "Track package" button. Every such message also carries its
SMS form in its metadata (``sms_text``), so "text me that" later knows what "that" was.

Orders are told only to their owner: the conversation's verified identity (its contact profile:
a phone number from caller id, a Twilio-signed sender or a host site's verified claim; a site
user from a signed chat token) must own the order. Someone else's order gets the same "couldn't
find" as a number that does not exist; a conversation with no identity at all (an anonymous web
chat visitor, a caller without caller id) is asked to sign in or to text from the order's phone.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from rasa_sdk import Action, Tracker
from rasa_sdk.events import ActiveLoop, EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.formatting import ChannelReply, current_channel
from omnichannel.channels import CHAT, SMS, WHATSAPP
from omnichannel.identity import ContactProfile, IdentityStore
from omnichannel.orders import Order, find_order, is_identified
from omnichannel.refunds import RefundRequests
from omnichannel.rendering.styles import date_for, parse_date

#: Channels a customer can send a photo on (MMS, WhatsApp, the web chat's attachments).
PHOTO_CHANNELS = (SMS, WHATSAPP, CHAT)
#: The ``offer`` slot value a "yes" turns into a text with the tracking link.
OFFER_TRACKING_LINK = "tracking_link"
VOICE_LINK_OFFER = "Would you like me to text you the tracking link?"


def _when(channel: str, value: Optional[str]) -> str:
    parsed = parse_date(value)
    return date_for(channel, parsed) if parsed else (value or "soon")


def tracking_sms(order: Order) -> Optional[str]:
    """The text worth sending by SMS for an order: its tracking link."""
    if not order.tracking_url:
        return None
    return f"Acme Shop order {order.number} ({order.carrier}): track it at {order.tracking_url}"


def _track_button(order: Order) -> List[Dict[str, Any]]:
    # The payload is the URL itself: the chat widget opens http(s) payloads as links.
    return [{"title": "Track package", "payload": order.tracking_url}] if order.tracking_url else []


def order_status_reply(order: Order) -> ChannelReply:
    """What the customer hears, reads by SMS, or sees in chat about an order's status."""
    if order.status == "delivered":
        chat = (
            f"**Order {order.number}** ({order.description}) was delivered on "
            f"**{_when('chat', order.delivered_on)}**."
        )
        voice = (
            f"Order {order.number}, the {order.description.lower()}, was delivered on "
            f"{_when('voice', order.delivered_on)}."
        )
        sms = (
            f"Order {order.number} ({order.description}): delivered "
            f"{_when('sms', order.delivered_on)}."
        )
    elif order.status == "shipped":
        chat = (
            f"**Order {order.number}** ({order.description}) has shipped with {order.carrier} "
            f"and should arrive on **{_when('chat', order.estimated_delivery)}**."
        )
        voice = (
            f"Order {order.number}, the {order.description.lower()}, has shipped with "
            f"{order.carrier} and should arrive on {_when('voice', order.estimated_delivery)}."
        )
        sms = (
            f"Order {order.number} ({order.description}): shipped via {order.carrier}, arriving "
            f"{_when('sms', order.estimated_delivery)}."
        )
    else:
        chat = (
            f"**Order {order.number}** ({order.description}) is being prepared and should "
            f"arrive on **{_when('chat', order.estimated_delivery)}**."
        )
        voice = (
            f"Order {order.number}, the {order.description.lower()}, is being prepared and "
            f"should arrive on {_when('voice', order.estimated_delivery)}."
        )
        sms = (
            f"Order {order.number} ({order.description}): being prepared, arriving "
            f"{_when('sms', order.estimated_delivery)}."
        )
    if order.tracking_url and order.status != "delivered":
        voice += " " + VOICE_LINK_OFFER
        sms += f" Track: {order.tracking_url}"
    return ChannelReply(
        chat=chat,
        voice=voice,
        sms=sms,
        buttons=_track_button(order) if order.status != "delivered" else [],
        metadata=_content_metadata(order, "your order status"),
    )


def tracking_reply(order: Order) -> ChannelReply:
    if not order.tracking_number:
        when = order.estimated_delivery
        return ChannelReply(
            chat=(
                f"Order {order.number} hasn't shipped yet, so there's no tracking number. "
                f"It should arrive on **{_when('chat', when)}**."
            ),
            voice=(
                f"Order {order.number} hasn't shipped yet, so there's no tracking number. "
                f"It should arrive on {_when('voice', when)}."
            ),
            sms=f"Order {order.number} hasn't shipped yet. Expected {_when('sms', when)}.",
            metadata={"topic": "the tracking details"},
        )
    return ChannelReply(
        chat=(
            f"The **{order.carrier}** tracking number for order {order.number} is "
            f"`{order.tracking_number}`."
        ),
        voice=(
            f"The {order.carrier} tracking number for order {order.number} is "
            f"{order.tracking_number}. {VOICE_LINK_OFFER}"
        ),
        sms=(
            f"Order {order.number} {order.carrier} tracking {order.tracking_number}: "
            f"{order.tracking_url}"
        ),
        buttons=_track_button(order),
        metadata=_content_metadata(order, "the tracking details"),
    )


def _content_metadata(order: Order, topic: str) -> Dict[str, Any]:
    metadata: Dict[str, Any] = {"topic": topic, "order_number": order.number}
    link = tracking_sms(order)
    if link:
        metadata["sms_text"] = link
        metadata["sms_topic"] = "the tracking link"
    return metadata


def _send(reply: ChannelReply, dispatcher: CollectingDispatcher, tracker: Tracker) -> List:
    channel = reply.send(dispatcher, tracker)
    offers_link = channel == "voice" and VOICE_LINK_OFFER in reply.text_for("voice")
    if offers_link:
        return [SlotSet("offer", OFFER_TRACKING_LINK)]
    return []


def _not_found(dispatcher: CollectingDispatcher, tracker: Tracker, form: str) -> List[EventType]:
    """No such order of this customer's: say so and ask again through ``form``, the form of the
    request the customer made, so the corrected number answers that request (a refund stays a
    refund).

    The form is made active here rather than run as a follow-up: a form that activates reads
    the latest message again and would take the same wrong number back.
    """
    number = tracker.get_slot("order_number")
    if number:
        dispatcher.utter_message(response="utter_order_not_found", order_number=number)
    return [SlotSet("order_number", None), ActiveLoop(form)]


async def verified_customer(tracker: Tracker) -> ContactProfile:
    """Who the conversation's customer is known to be: whose orders it may see and change."""
    return await IdentityStore().profile(tracker.sender_id)


async def customers_order(
    dispatcher: CollectingDispatcher, tracker: Tracker, form: str
) -> Tuple[Optional[Order], List[EventType]]:
    """The order the customer named, if it is theirs. Otherwise None, with the answer already
    given and its events: sign in first (no identity), or not found (see :func:`_not_found`)."""
    customer = await verified_customer(tracker)
    if not is_identified(customer):
        dispatcher.utter_message(response="utter_order_sign_in")
        return None, []
    order = find_order(tracker.get_slot("order_number"), customer)
    if order is None:
        return None, _not_found(dispatcher, tracker, form)
    return order, []


class ActionCheckOrderStatus(Action):
    def name(self) -> str:
        return "action_check_order_status"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        order, events = await customers_order(dispatcher, tracker, "order_status_form")
        if order is None:
            return events
        return _send(order_status_reply(order), dispatcher, tracker)


class ActionTrackingNumber(Action):
    def name(self) -> str:
        return "action_tracking_number"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        order, events = await customers_order(dispatcher, tracker, "tracking_form")
        if order is None:
            return events
        return _send(tracking_reply(order), dispatcher, tracker)


#: The ``offer`` slot value of "Do you want me to start a refund for order …?": a yes starts it.
OFFER_REFUND = "request_refund"


async def _refundable_order(
    dispatcher: CollectingDispatcher, tracker: Tracker
) -> Tuple[Optional[Order], List[EventType]]:
    """The customer's order if a refund can start for it, else None with the answer given."""
    order, events = await customers_order(dispatcher, tracker, "refund_form")
    if order is not None and not order.refundable:
        dispatcher.utter_message(
            response="utter_refund_not_eligible",
            order_number=order.number,
            refund_reason=order.refund_reason or "it's outside our refund policy",
        )
        return None, events
    return order, events


class ActionRequestRefund(Action):
    """A refund request for the order in the conversation: checked, then confirmed first. A
    refund is not undone by a follow-up message, and a question about the policy can read like
    a request, so no refund starts before the customer has said yes to this order."""

    def name(self) -> str:
        return "action_request_refund"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        order, events = await _refundable_order(dispatcher, tracker)
        if order is None:
            return events
        dispatcher.utter_message(
            response="utter_confirm_refund",
            order_number=order.number,
            order_description=order.description,
        )
        return [SlotSet("offer", OFFER_REFUND)]


class ActionStartRefund(Action):
    """The yes to "Do you want me to start a refund for order …?": the refund request starts
    (kept in omnichannel/refunds.py) and, where the customer can send one, a photo of the damage
    is invited (action_receive_media adds it to the request)."""

    def name(self) -> str:
        return "action_start_refund"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        order, events = await _refundable_order(dispatcher, tracker)
        if order is None:
            return [*events, SlotSet("offer", None)]
        await RefundRequests().start(tracker.sender_id, order.number)
        dispatcher.utter_message(response="utter_refund_started", order_number=order.number)
        if current_channel(tracker) in PHOTO_CHANNELS:
            dispatcher.utter_message(response="utter_refund_photo_invite")
        return [
            SlotSet("offer", None),
            SlotSet("refund_order", order.number),
            SlotSet("refund_photo", False),
        ]
