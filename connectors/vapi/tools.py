"""Function tools a VAPI assistant may call (``tool-calls``, legacy ``function-call``).

Configured on the VAPI assistant as function tools; answered here without a Rasa turn, so a
VAPI assistant that drives the call itself can still look things up. They answer for the caller
only, as the actions answer for a conversation's customer: an order is described only to its
owner (the caller's number, or the site user a signed token names), and someone else's order is
"not found", exactly like a number that does not exist.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from connectors.vapi.wire import ToolCall
from omnichannel.orders import VerifiedIdentity, find_order, is_identified
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.voice import render_voice

#: The order tool's answer to a caller with neither a number nor a signed-in user.
UNKNOWN_CALLER = (
    "I can't look up orders on this call, because I don't know the caller's phone number or "
    "account. Please call or text us from the phone number on the order."
)


def _order_status_tool(arguments: Dict[str, Any], caller: VerifiedIdentity) -> str:
    number = arguments.get("order_number") or arguments.get("orderNumber")
    if not number:
        raise ValueError("order_number is required")
    if not is_identified(caller):
        return render_voice([BotMessage(text=UNKNOWN_CALLER)])
    order = find_order(str(number), caller)
    if order is None:
        return render_voice([BotMessage(text=f"I couldn't find order {number}.")])
    when = order.delivered_on or order.estimated_delivery or "soon"
    text = f"Order {order.number} ({order.description}) is {order.status}; delivery {when}."
    return render_voice([BotMessage(text=text)])


#: name -> function(arguments, caller) -> spoken result. Others are refused per tool.
TOOLS: Dict[str, Callable[[Dict[str, Any], VerifiedIdentity], str]] = {
    "order_status": _order_status_tool
}


def run_tool(call: ToolCall, caller: VerifiedIdentity) -> Dict[str, str]:
    """``{"result": …}`` from a known tool for this caller, else ``{"error": …}`` saying why
    not."""
    tool = TOOLS.get(call.tool_name)
    if tool is None:
        return {"error": f"Unknown tool {call.tool_name!r}."}
    try:
        return {"result": tool(call.tool_arguments, caller)}
    except ValueError as error:
        return {"error": f"Bad arguments for {call.tool_name}: {error}."}
