"""Function tools a VAPI assistant may call (``tool-calls``, legacy ``function-call``).

Configured on the VAPI assistant as function tools; answered here without a Rasa turn, so a
VAPI assistant that drives the call itself can still look things up.
"""

from __future__ import annotations

from typing import Any, Callable, Dict

from connectors.vapi.wire import ToolCall
from omnichannel.orders import find_order
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.voice import render_voice


def _order_status_tool(arguments: Dict[str, Any]) -> str:
    number = arguments.get("order_number") or arguments.get("orderNumber")
    if not number:
        raise ValueError("order_number is required")
    order = find_order(str(number))
    if order is None:
        return render_voice([BotMessage(text=f"There is no order {number}.")])
    when = order.delivered_on or order.estimated_delivery or "soon"
    text = f"Order {order.number} ({order.description}) is {order.status}; delivery {when}."
    return render_voice([BotMessage(text=text)])


#: name -> function(arguments) -> spoken result. Others are refused per tool.
TOOLS: Dict[str, Callable[[Dict[str, Any]], str]] = {"order_status": _order_status_tool}


def run_tool(call: ToolCall) -> Dict[str, str]:
    """``{"result": …}`` from a known tool, else ``{"error": …}`` saying why not."""
    tool = TOOLS.get(call.tool_name)
    if tool is None:
        return {"error": f"Unknown tool {call.tool_name!r}."}
    try:
        return {"result": tool(call.tool_arguments)}
    except ValueError as error:
        return {"error": f"Bad arguments for {call.tool_name}: {error}."}
