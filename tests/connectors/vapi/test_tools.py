"""Function tools VAPI may call: answered per call, refused with a reason."""

from __future__ import annotations

from connectors.vapi.tools import TOOLS, run_tool
from connectors.vapi.wire import ToolCall


def test_order_status_tool() -> None:
    assert set(TOOLS) == {"order_status"}
    result = run_tool(ToolCall(name="order_status", arguments={"order_number": "12345"}))
    assert "1 2 3 4 5" in result["result"] and "shipped" in result["result"]
    legacy = run_tool(ToolCall(name="order_status", arguments={"orderNumber": "40213"}))
    assert "4 0 2 1 3" in legacy["result"]
    missing = run_tool(ToolCall(name="order_status", arguments={"order_number": "99999"}))
    assert missing == {"result": "There is no order 9 9 9 9 9."}


def test_refusals_say_why() -> None:
    assert run_tool(ToolCall(name="launch_rocket")) == {"error": "Unknown tool 'launch_rocket'."}
    assert run_tool(ToolCall(name="order_status", arguments={})) == {
        "error": "Bad arguments for order_status: order_number is required."
    }
    assert run_tool(ToolCall(name="order_status", arguments="{no")) == {
        "error": "Bad arguments for order_status: arguments are not valid JSON."
    }
