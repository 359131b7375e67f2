"""VAPI connector (being built: see the issue)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from rasa.core.channels.channel import InputChannel, UserMessage
from sanic import Blueprint, response


class VapiInput(InputChannel):
    @classmethod
    def name(cls) -> str:
        return "vapi"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        bp = Blueprint("omni_vapi", __name__)

        @bp.route("/", methods=["GET"])
        async def health(_: Any) -> Any:
            return response.json({"status": "ok"})

        return bp
