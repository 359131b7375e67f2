"""The Rasa channel ``handoff``: the hand-off's options in credentials.yml, and the engine
started with the server. It serves no routes and takes no messages (agents' pages are the
``inbox`` channel's; the customer's messages come through their own channels).

credentials.yml::

    connectors.handoff.channel.HandoffInput:
      withdraw_intents: [deny]           # see HandoffOptions (connectors/handoff/engine.py)
      answer_intents: [ask_refund_policy, bot_challenge]
      min_confidence: 0.7

The support team's hours and the waiting bounds are settings (``HANDOFF_*``), because the
action server reads them too: docs/SUPPORT.md.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, Optional

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint, Sanic

from connectors.handoff.engine import HandoffOptions, handoff_engine

SECTION = "connectors.handoff.channel.HandoffInput"


class HandoffInput(InputChannel):
    """Rasa input channel ``handoff``; credentials.yml:
    ``connectors.handoff.channel.HandoffInput`` (its options: :class:`HandoffOptions`)."""

    def __init__(self, options: HandoffOptions) -> None:
        self.options = options
        handoff_engine().configure(options)

    @classmethod
    def name(cls) -> str:
        return "handoff"

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> HandoffInput:
        given = {key: value for key, value in (credentials or {}).items() if value is not None}
        return cls(HandoffOptions.parse(SECTION, given))

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint("omni_handoff", __name__)

        @bp.listener("after_server_start")
        async def start(app: Sanic, _: Any) -> None:
            handoff_engine().start(app.ctx)

        return bp
