"""Talking to the shared stack over Rasa's REST channel, for tests of the actions alone.

Connector tests go through the real connectors; these drive the trained assistant and the
action server directly, stating the channel in the metadata the way the connectors do.
"""

from __future__ import annotations

import secrets
from typing import Any, Dict, List

import httpx

from devtools.stack import RasaStack


def new_conversation() -> str:
    return "c_" + secrets.token_urlsafe(12)


def say(
    stack: RasaStack, sender: str, text: str, channel: str = "chat", **metadata: Any
) -> List[Dict[str, Any]]:
    """One REST turn; returns Rasa's bot messages (dicts with text, buttons, custom, …)."""
    response = httpx.post(
        f"{stack.base_url}/webhooks/rest/webhook",
        json={"sender": sender, "message": text, "metadata": {"channel": channel, **metadata}},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()


def texts(messages: List[Dict[str, Any]]) -> List[str]:
    return [message.get("text") or "" for message in messages]


def tracker(stack: RasaStack, sender: str) -> Dict[str, Any]:
    response = httpx.get(
        f"{stack.base_url}/conversations/{sender}/tracker",
        params={"token": stack.env["RASA_AUTH_TOKEN"]},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def bot_events(stack: RasaStack, sender: str) -> List[Dict[str, Any]]:
    return [e for e in tracker(stack, sender)["events"] if e["event"] == "bot"]
