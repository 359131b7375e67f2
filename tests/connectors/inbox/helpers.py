"""Acting as an agent on the real stack: tokens as the host's SSO signs them, the inbox's API."""

from __future__ import annotations

import secrets
import time
from typing import Any, Dict, List, Optional

import httpx

from connectors.inbox.auth import agent_token
from omnichannel.settings import DEFAULT_INBOX_AUDIENCE
from testkit.stack import RasaStack


def token_for(stack: RasaStack, name: str = "Dana", agent_id: Optional[str] = None) -> str:
    return agent_token(
        stack.env["INBOX_JWT_SECRET"],
        agent_id or f"agent-{name.lower()}-{secrets.token_hex(3)}",
        name,
        audience=DEFAULT_INBOX_AUDIENCE,
    )


def inbox(stack: RasaStack, path: str, token: Optional[str], body: Any = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        f"{stack.base_url}/webhooks/inbox/api/{path}", json=body or {}, headers=headers, timeout=30
    )


def queued_ids(stack: RasaStack, token: str) -> List[str]:
    answer = inbox(stack, "queue", token)
    assert answer.status_code == 200, answer.text
    return [item["conversation_id"] for item in answer.json()["handoffs"]]


def reply(
    stack: RasaStack, token: str, cid: str, text: str, channel: str, message_id: str = ""
) -> httpx.Response:
    return inbox(
        stack,
        "reply",
        token,
        {
            "conversation_id": cid,
            "message_id": message_id or secrets.token_hex(8),
            "channel": channel,
            "text": text,
        },
    )


def wait_for(predicate: Any, timeout: float = 15, what: str = "the condition") -> Any:
    """Polls ``predicate`` until it returns something truthy (for state other processes write)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s")


def last_handoff(stack: RasaStack, token: str, cid: str) -> Dict[str, Any]:
    answer = inbox(stack, "conversation", token, {"conversation_id": cid})
    assert answer.status_code == 200, answer.text
    return answer.json()
