"""Function tools VAPI may call: answered per call for the caller only, refused with a reason."""

from __future__ import annotations

import pytest

from connectors.vapi.tools import TOOLS, UNKNOWN_CALLER, run_tool
from connectors.vapi.wire import ToolCall
from omnichannel.orders import Customer

pytestmark = pytest.mark.unit

#: The demo customer, who owns the demo orders (omnichannel/fixtures/orders.json).
OWNER = Customer(phone="+14155552671")
STRANGER = Customer(phone="+16175550123")


def test_order_status_tool_answers_the_owner() -> None:
    assert set(TOOLS) == {"order_status"}
    result = run_tool(ToolCall(name="order_status", arguments={"order_number": "12345"}), OWNER)
    assert "1 2 3 4 5" in result["result"] and "shipped" in result["result"]
    legacy = run_tool(ToolCall(name="order_status", arguments={"orderNumber": "40213"}), OWNER)
    assert "4 0 2 1 3" in legacy["result"]
    by_user = run_tool(
        ToolCall(name="order_status", arguments={"order_number": "77801"}),
        Customer(user_id="demo-customer"),
    )
    assert "delivered" in by_user["result"]
    missing = run_tool(ToolCall(name="order_status", arguments={"order_number": "99999"}), OWNER)
    assert missing == {"result": "I couldn't find order 9 9 9 9 9."}


def test_someone_elses_order_is_answered_like_a_missing_one() -> None:
    theirs = run_tool(ToolCall(name="order_status", arguments={"order_number": "12345"}), STRANGER)
    assert theirs == {"result": "I couldn't find order 1 2 3 4 5."}
    missing = run_tool(ToolCall(name="order_status", arguments={"order_number": "99999"}), STRANGER)
    assert missing == {"result": "I couldn't find order 9 9 9 9 9."}


def test_an_unknown_caller_is_told_why_whatever_the_number() -> None:
    for number in ("12345", "99999"):
        answer = run_tool(
            ToolCall(name="order_status", arguments={"order_number": number}), Customer()
        )
        assert answer == {"result": UNKNOWN_CALLER}


def test_refusals_say_why() -> None:
    assert run_tool(ToolCall(name="launch_rocket"), OWNER) == {
        "error": "Unknown tool 'launch_rocket'."
    }
    assert run_tool(ToolCall(name="order_status", arguments={}), OWNER) == {
        "error": "Bad arguments for order_status: order_number is required."
    }
    assert run_tool(ToolCall(name="order_status", arguments="{no"), OWNER) == {
        "error": "Bad arguments for order_status: arguments are not valid JSON."
    }
