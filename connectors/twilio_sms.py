"""Twilio connector (being built: see the issue)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint, response


class TwilioSmsInput(InputChannel):
    @classmethod
    def name(cls) -> str:
        return "twilio_sms"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint("omni_twilio_sms", __name__)

        @bp.route("/", methods=["GET"])
        async def health(_: Any) -> Any:
            return response.json({"status": "ok"})

        return bp
