"""Callbacks by phone, in the customer's words: "call me back", "call me tomorrow at 3pm",
"move my callback to 4", "cancel my callback", on any channel.

A callback is an outbound item (omnichannel/callbacks/items.py) that the Rasa server's outbound
queue places through VAPI when it is due; these actions only record, move and cancel it, and
say so. What they promise is what happens:

- the call goes to the conversation's own number (the one the customer called or texted from,
  or the verified number of their site login), never to a number in the message; without one
  the customer hears how to get one on file;
- the time is read from the message (omnichannel/callbacks/times.py) and kept inside the
  support team's hours; a time when the team is closed becomes the next opening, and the answer
  says so;
- the outbound gate is asked first, so a number that opted out (STOP) hears that instead of a
  promise;
- a conversation has one callback waiting at a time: asking again moves it;
- its first words are written now from domain.yml (``utter_callback_opening``, or its
  ``_order`` form naming the order in the conversation), so the call continues this
  conversation.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType
from rasa_sdk.executor import CollectingDispatcher

from actions.formatting import current_channel
from omnichannel.callbacks.booking import MOVED, NO_NUMBER, REFUSED, book_callback
from omnichannel.callbacks.items import callbacks_of, scheduled_callback
from omnichannel.callbacks.times import (
    CallbackTime,
    RequestedTime,
    Unclear,
    callback_hours,
    due_time,
    requested_time,
)
from omnichannel.errors import ConfigError
from omnichannel.handoff.hours import BusinessHours
from omnichannel.outbound.gate import OutboundGate
from omnichannel.outbound.items import SENDING, SENT, OutboundQueue
from omnichannel.outbound.policy import OutboundPolicy
from omnichannel.redis_client import REDIS_FAILURES
from omnichannel.settings import load_settings

logger = logging.getLogger(__name__)

OPENING = "utter_callback_opening"
OPENING_ORDER = "utter_callback_opening_order"
#: A callback placed this recently counts as "calling you now" for a cancel.
RECENT_CALL_SECONDS = 15 * 60
_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _queue() -> OutboundQueue:
    """The outbound items of this deployment. The action server records them; the Rasa
    server's queue sends them (it holds the couriers), so nothing is sent from here."""
    return OutboundQueue(load_settings().redis_url, OutboundGate(OutboundPolicy.from_env()))


def opening_words(domain: Dict[str, Any], slots: Dict[str, Any]) -> str:
    """The call's first words: ``utter_callback_opening_order`` when an order is in the
    conversation, else ``utter_callback_opening``; the ``channel: vapi`` variation if there is
    one, its ``{slot}`` names filled."""
    responses = domain.get("responses") or {}
    name = OPENING_ORDER if slots.get("order_number") else OPENING
    variations = [v for v in responses.get(name) or [] if not v.get("condition")]
    chosen = next((v for v in variations if v.get("channel") == "vapi"), None) or next(
        (v for v in variations if not v.get("channel")), None
    )
    if chosen is None or not chosen.get("text"):
        return ""
    return _SLOT.sub(lambda m: str(slots.get(m.group(1)) or ""), str(chosen["text"]))


def _when(hours: BusinessHours, due: float, now: float) -> str:
    return hours.describe(due, now)


class _CallbackSteps:
    """Shared steps: the hours, the time asked for, the answers to a time that cannot be (a
    mixin, not an Action: rasa-sdk registers every Action subclass it finds)."""

    def hours(self) -> BusinessHours:
        return callback_hours()

    @staticmethod
    def asked(tracker: Tracker) -> RequestedTime | Unclear:
        return requested_time(str((tracker.latest_message or {}).get("text") or ""))

    @staticmethod
    def refuse_time(dispatcher: CollectingDispatcher, reason: str) -> None:
        """A time that cannot be booked: ``passed``, ``too_far`` or ``closed``."""
        dispatcher.utter_message(response=f"utter_callback_time_{reason}")


class ActionRequestCallback(_CallbackSteps, Action):
    def name(self) -> str:
        return "action_request_callback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        settings = load_settings()
        if not settings.places_calls:
            dispatcher.utter_message(response="utter_callback_unavailable")
            return []
        asked = self.asked(tracker)
        if isinstance(asked, Unclear):
            dispatcher.utter_message(response="utter_ask_callback_time")
            return []
        conversation_id = tracker.sender_id
        try:
            hours = self.hours()
            queue = _queue()
            now = queue.clock()
            when = due_time(asked, now, hours)
            if not isinstance(when, CallbackTime):
                self.refuse_time(dispatcher, when.reason)
                return []
            slots = dict(tracker.slots)
            booking = await book_callback(
                queue,
                conversation_id,
                when.due,
                opening=opening_words(domain, slots),
                topic=str(slots.get("order_number") or ""),
                requested_on=current_channel(tracker),
            )
        except (ConfigError, *REDIS_FAILURES) as error:
            logger.error("callback not booked: %s", type(error).__name__)
            dispatcher.utter_message(response="utter_callback_unavailable")
            return []
        if booking.result == NO_NUMBER:
            dispatcher.utter_message(response="utter_callback_no_number")
            return []
        if booking.result == REFUSED:
            dispatcher.utter_message(response=f"utter_callback_refused_{booking.reason}")
            return []
        due = float(booking.due or when.due)
        if booking.result == MOVED:
            dispatcher.utter_message(
                response="utter_callback_moved", callback_time=_when(hours, due, now)
            )
            return []
        if due <= now + 60:
            dispatcher.utter_message(response="utter_callback_now")
        elif when.moved_to_opening:
            dispatcher.utter_message(
                response="utter_callback_scheduled_at_opening",
                callback_time=_when(hours, due, now),
            )
        else:
            dispatcher.utter_message(
                response="utter_callback_scheduled", callback_time=_when(hours, due, now)
            )
        return []


class ActionMoveCallback(_CallbackSteps, Action):
    def name(self) -> str:
        return "action_move_callback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        asked = self.asked(tracker)
        try:
            queue = _queue()
            existing = await scheduled_callback(queue.store, tracker.sender_id)
            if existing is None:
                dispatcher.utter_message(response="utter_no_callback")
                return []
            if isinstance(asked, Unclear) or (isinstance(asked, RequestedTime) and asked.asap):
                dispatcher.utter_message(response="utter_ask_callback_time")
                return []
            hours = self.hours()
            now = queue.clock()
            when = due_time(asked, now, hours, day_of=existing.due)
            if not isinstance(when, CallbackTime):
                self.refuse_time(dispatcher, when.reason)
                return []
            moved = await queue.reschedule(tracker.sender_id, existing.item_id, when.due)
        except (ConfigError, *REDIS_FAILURES) as error:
            logger.error("callback not moved: %s", type(error).__name__)
            dispatcher.utter_message(response="utter_callback_unavailable")
            return []
        if not moved:
            dispatcher.utter_message(response="utter_callback_calling_now")
            return []
        dispatcher.utter_message(
            response="utter_callback_moved", callback_time=_when(hours, when.due, now)
        )
        return []


class ActionCancelCallback(_CallbackSteps, Action):
    def name(self) -> str:
        return "action_cancel_callback"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        try:
            queue = _queue()
            existing = await scheduled_callback(queue.store, tracker.sender_id)
            if existing is None:
                if await _calling_now(queue, tracker.sender_id):
                    dispatcher.utter_message(response="utter_callback_calling_now")
                else:
                    dispatcher.utter_message(response="utter_no_callback")
                return []
            cancelled = await queue.cancel(tracker.sender_id, existing.item_id)
        except (ConfigError, *REDIS_FAILURES) as error:
            logger.error("callback not cancelled: %s", type(error).__name__)
            dispatcher.utter_message(response="utter_callback_unavailable")
            return []
        if not cancelled:
            dispatcher.utter_message(response="utter_callback_calling_now")
            return []
        dispatcher.utter_message(response="utter_callback_cancelled")
        return []


async def _calling_now(queue: OutboundQueue, conversation_id: str) -> bool:
    """A callback of this conversation is being placed or was placed in the last minutes."""
    now = time.time()
    for item in await callbacks_of(queue.store, conversation_id):
        if item.status == SENDING:
            return True
        if item.status == SENT and now - item.updated < RECENT_CALL_SECONDS:
            return True
    return False
