"""Talking to the shared stack as VAPI does, and reading its state back, for the VAPI tests.

The caller is the ``openai`` SDK's streaming client (what VAPI itself uses), driven through
devtools.sim_vapi.VapiCall; VAPI's control URL is the local fake; the LLM is testkit.fake_llm.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

import httpx
import redis.asyncio as aioredis
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import UserUtteranceReverted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from omnichannel.addresses import phone_address
from omnichannel.identity import IdentityStore
from testkit.phone_numbers import new_phone_number
from testkit.processes import ROOT
from testkit.vapi_call import VapiCall


async def conversation_of_stack(stack, number: str) -> Optional[str]:
    client = aioredis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        return await IdentityStore(client).lookup(phone_address(number))
    finally:
        await client.close()


@functools.lru_cache(maxsize=1)
def domain() -> Domain:
    return Domain.load(str(ROOT / "domain.yml"))


async def tracker_of(stack, conversation_id: str) -> DialogueStateTracker:
    token = stack.env["RASA_AUTH_TOKEN"]
    async with httpx.AsyncClient(timeout=30) as client:
        reply = await client.get(
            f"{stack.base_url}/conversations/{conversation_id}/tracker",
            params={"token": token, "include_events": "ALL"},
        )
    reply.raise_for_status()
    return DialogueStateTracker.from_dict(conversation_id, reply.json()["events"], domain().slots)


def user_texts(tracker: DialogueStateTracker) -> List[str]:
    """The user turns that count: each UserUtteranceReverted takes the last one back."""
    texts: List[str] = []
    for event in tracker.events:
        if isinstance(event, UserUttered):
            texts.append(event.text)
        elif isinstance(event, UserUtteranceReverted) and texts:
            texts.pop()
    return texts


async def raw_completion(
    stack, body: Any, headers: Dict[str, str], path: str = "/chat/completions"
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            f"{stack.base_url}/webhooks/vapi{path}",
            content=content,
            headers={"Content-Type": "application/json", **headers},
        )


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    """Poll a condition met by another process (the fakes record requests in threads)."""
    deadline = time.monotonic() + timeout
    while not condition():  # noqa: ASYNC110 - the condition is set by other threads/processes
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


def same_call_on(call: VapiCall, base_url: str) -> VapiCall:
    """``call`` as VAPI places it on another replica (same call, caller and control URL)."""
    return VapiCall(
        base_url=base_url,
        server_secret=call.server_secret,
        number=call.number,
        call_id=call.call_id,
        control_url=call.control_url,
    )


def sse_frames(text: str) -> List[str]:
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


def completion_body(call: VapiCall, text: str) -> Dict[str, Any]:
    return {
        "model": "rasa",
        "stream": True,
        "messages": [{"role": "user", "content": text}],
        "call": call.call,
        "customer": {"number": call.number},
    }


def call_body(**overrides: Any) -> Dict[str, Any]:
    """A custom-LLM request body for a new call, with ``overrides`` set."""
    body = {
        "model": "rasa",
        "stream": True,
        "messages": [{"role": "user", "content": "hello"}],
        "call": {"id": str(uuid.uuid4()), "customer": {"number": new_phone_number()}},
    }
    body.update(overrides)
    return body


def signed(secret: str, body: bytes, timestamp: str) -> Dict[str, str]:
    """VAPI's HMAC credential headers for ``body``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return {"x-timestamp": timestamp, "x-signature": digest.hexdigest()}
