"""A VAPI phone call as VAPI places it against the Rasa server: the custom-LLM requests with the
whole transcribed history (streamed through the ``openai`` SDK, as VAPI's own client reads them),
the server messages signed with the server secret, barge-ins, and the hang-up's report.

Tests, benchmarks, the fleet's customers and the VAPI simulator (``python -m devtools.sim_vapi``)
all place their calls with :class:`VapiCall`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, cast

import httpx
import openai

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

FLUSH_TAG = "<flush />"


@dataclass
class Reply:
    """One streamed answer as VAPI received it."""

    text: str
    chunks: List[str]
    first_content_seconds: Optional[float]
    done_seconds: float
    finish_reason: Optional[str]


@dataclass
class VapiCall:
    """One call, as VAPI would place it against ``base_url`` (the Rasa server)."""

    base_url: str
    server_secret: str
    number: Optional[str] = None
    custom_llm_key: Optional[str] = None
    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    call_type: str = "inboundPhoneCall"
    control_url: Optional[str] = None
    variables: Dict[str, Any] = field(default_factory=dict)
    #: ``assistantOverrides.metadata`` of a call placed through the API (a callback's ids);
    #: VAPI hands it to the custom LLM as ``metadata``.
    metadata: Dict[str, Any] = field(default_factory=dict)
    assistant_number: str = "+15005550006"
    #: The transcribed conversation VAPI resends on every request.
    history: List[Dict[str, str]] = field(default_factory=list)
    #: How server messages are authenticated: "hmac", "secret" (X-Vapi-Secret) or "bearer".
    event_auth: str = "hmac"
    timeout: float = 30.0
    _client: Optional[openai.AsyncOpenAI] = field(default=None, repr=False)

    @property
    def call(self) -> Dict[str, Any]:
        payload: Dict[str, Any] = {"id": self.call_id, "type": self.call_type}
        if self.number:
            payload["customer"] = {"number": self.number}
        if self.control_url:
            payload["monitor"] = {"controlUrl": self.control_url}
        overrides: Dict[str, Any] = {}
        if self.variables:
            overrides["variableValues"] = self.variables
        if self.metadata:
            overrides["metadata"] = self.metadata
        if overrides:
            payload["assistantOverrides"] = overrides
        return payload

    def llm_client(self) -> openai.AsyncOpenAI:
        """One client for the whole call, keeping its connection, as VAPI's does."""
        if self._client is None:
            self._client = openai.AsyncOpenAI(
                base_url=f"{self.base_url}/webhooks/vapi",
                api_key=self.custom_llm_key or self.server_secret,
                timeout=self.timeout,
                max_retries=0,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def event_headers(self, body: bytes) -> Dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.event_auth == "secret":
            headers["X-Vapi-Secret"] = self.server_secret
        elif self.event_auth == "bearer":
            headers["Authorization"] = f"Bearer {self.server_secret}"
        else:
            timestamp = str(int(time.time() * 1000))
            signed = timestamp.encode() + b"." + body
            digest = hmac.new(self.server_secret.encode(), signed, hashlib.sha256).hexdigest()
            headers["x-timestamp"] = timestamp
            headers["x-signature"] = digest
        return headers

    async def event(self, message: Dict[str, Any]) -> httpx.Response:
        """POST a server message (``call``, ``customer`` and ``timestamp`` filled in)."""
        envelope = {
            "message": {
                "timestamp": int(time.time() * 1000),
                "call": self.call,
                **({"customer": {"number": self.number}} if self.number else {}),
                "phoneNumber": {"number": self.assistant_number},
                **message,
            }
        }
        body = json.dumps(envelope).encode()
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            return await client.post(
                f"{self.base_url}/webhooks/vapi/events",
                content=body,
                headers=self.event_headers(body),
            )

    async def assistant_request(self) -> Dict[str, Any]:
        """VAPI asks which assistant takes the call; its first message starts the history."""
        reply = await self.event({"type": "assistant-request"})
        reply.raise_for_status()
        answer = reply.json()
        first = (answer.get("assistant") or {}).get("firstMessage")
        if first:
            self.history.append({"role": "assistant", "content": first})
        return answer

    async def complete(self, messages: List[Dict[str, str]]) -> Reply:
        """One custom-LLM request with ``messages`` as the history, read as a stream."""
        started = time.perf_counter()
        first: Optional[float] = None
        chunks: List[str] = []
        finish: Optional[str] = None
        stream = await self.llm_client().chat.completions.create(
            model="rasa",
            # The SDK types each role's message apart; this is the call's history as VAPI has it.
            messages=cast("List[ChatCompletionMessageParam]", messages),
            stream=True,
            extra_body={
                "call": self.call,
                **({"customer": {"number": self.number}} if self.number else {}),
                "phoneNumber": {"number": self.assistant_number},
                **({"metadata": self.metadata} if self.metadata else {}),
            },
        )
        async for chunk in stream:
            choice = chunk.choices[0]
            if choice.delta.content:
                if first is None:
                    first = time.perf_counter() - started
                chunks.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
        text = " ".join("".join(chunks).replace(FLUSH_TAG, " ").split())
        return Reply(text, chunks, first, time.perf_counter() - started, finish)

    async def say(self, text: str, interrupt_after: Optional[int] = None) -> Reply:
        """The caller says ``text``; the bot's answer is heard whole or, with
        ``interrupt_after``, only its first N characters (then VAPI reports the interruption)."""
        self.history.append({"role": "user", "content": text})
        reply = await self.complete(list(self.history))
        heard = reply.text
        if interrupt_after is not None and len(heard) > interrupt_after:
            heard = heard[:interrupt_after].rsplit(" ", 1)[0]
            await self.event({"type": "user-interrupted", "turnId": str(uuid.uuid4())})
        if heard:
            self.history.append({"role": "assistant", "content": heard})
        return reply

    def transcript(self) -> str:
        names = {"user": "User", "assistant": "AI"}
        return "\n".join(f"{names[m['role']]}: {m['content']}" for m in self.history)

    async def hang_up(self, summary: str = "", recording_url: Optional[str] = None) -> None:
        """The call ends: VAPI's end-of-call-report with the transcript and a summary."""
        recording = recording_url or f"https://storage.vapi.example/{self.call_id}-mono.wav"
        reply = await self.event(
            {
                "type": "end-of-call-report",
                "endedReason": "customer-ended-call",
                "artifact": {
                    "transcript": self.transcript(),
                    "messages": self.history,
                    "recordingUrl": recording,
                },
                "analysis": {"summary": summary or "The caller talked to the assistant."},
            }
        )
        reply.raise_for_status()
