"""A customer's call on the real stack, for the viewer's route and browser tests."""

from __future__ import annotations

from testkit.stack import RasaStack
from testkit.vapi_call import VapiCall

CALL_SUMMARY = "The caller said hello and will text about a refund."


async def call_and_hang_up(stack: RasaStack, phone: str) -> None:
    """A call from ``phone`` through the real VAPI connector: "hello", then the end-of-call
    report with :data:`CALL_SUMMARY`."""
    call = VapiCall(
        base_url=stack.base_url, server_secret=stack.env["VAPI_SERVER_SECRET"], number=phone
    )
    await call.say("hello")
    await call.hang_up(summary=CALL_SUMMARY)
