"""The shop's business actions: order status, tracking and refunds."""

from __future__ import annotations

from typing import Any, Dict, List

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.orders import Order, find_order


def _status_line(order: Order) -> str:
    if order.status == "delivered":
        return f"Order {order.number} ({order.description}) was delivered on {order.delivered_on}."
    if order.status == "shipped":
        return (
            f"Order {order.number} ({order.description}) has shipped with {order.carrier} "
            f"and should arrive on {order.estimated_delivery}."
        )
    return (
        f"Order {order.number} ({order.description}) is being prepared and should arrive "
        f"on {order.estimated_delivery}."
    )


def _not_found(dispatcher: CollectingDispatcher, tracker: Tracker) -> List[EventType]:
    dispatcher.utter_message(
        response="utter_order_not_found", order_number=tracker.get_slot("order_number")
    )
    return [SlotSet("order_number", None)]


class ActionCheckOrderStatus(Action):
    def name(self) -> str:
        return "action_check_order_status"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        order = find_order(tracker.get_slot("order_number"))
        if order is None:
            return _not_found(dispatcher, tracker)
        dispatcher.utter_message(text=_status_line(order))
        return []


class ActionTrackingNumber(Action):
    def name(self) -> str:
        return "action_tracking_number"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        order = find_order(tracker.get_slot("order_number"))
        if order is None:
            return _not_found(dispatcher, tracker)
        if not order.tracking_number:
            dispatcher.utter_message(
                text=f"Order {order.number} hasn't shipped yet, so there's no tracking number. "
                f"It should arrive on {order.estimated_delivery}."
            )
            return []
        dispatcher.utter_message(
            text=f"The {order.carrier} tracking number for order {order.number} is "
            f"{order.tracking_number}. Track it here: {order.tracking_url}"
        )
        return []


class ActionRequestRefund(Action):
    def name(self) -> str:
        return "action_request_refund"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        order = find_order(tracker.get_slot("order_number"))
        if order is None:
            return _not_found(dispatcher, tracker)
        if not order.refundable:
            dispatcher.utter_message(
                response="utter_refund_not_eligible",
                order_number=order.number,
                refund_reason=order.refund_reason or "it's outside our refund policy",
            )
            return []
        dispatcher.utter_message(response="utter_refund_started", order_number=order.number)
        return []
