"""Plays VAPI against a running server: a phone call over the custom-LLM and server-message
endpoints, signed with the secrets in .env, as VAPI would make it.

A call is: ``assistant-request`` (the greeting), then each caller utterance as a custom-LLM
request carrying the whole transcribed history (read as a stream by the ``openai`` SDK, as
VAPI's own client does), optionally a barge-in (the caller cuts the bot off after N characters:
VAPI sends ``user-interrupted`` and the next history holds only the heard part), and at hang-up
an ``end-of-call-report``. Live Call Control requests (end the call, transfer) go to a local
fake of VAPI's control URL and are printed.

    .venv/bin/python -m devtools.sim_vapi --from +14155552671
    .venv/bin/python -m devtools.sim_vapi --from +14155552671 --say "where is my order" \\
        --say 12345 --interrupt-after 20

Tests and benchmarks use :class:`VapiCall` directly.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import httpx
import openai

from devtools.fake_vapi_control import FakeVapiControl

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
        if self.variables:
            payload["assistantOverrides"] = {"variableValues": self.variables}
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
            messages=messages,
            stream=True,
            extra_body={
                "call": self.call,
                **({"customer": {"number": self.number}} if self.number else {}),
                "phoneNumber": {"number": self.assistant_number},
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


async def play_call(call: VapiCall, utterances: List[str], interrupt_after: Optional[int]) -> None:
    """A whole call: greeting, the utterances (or stdin when none), hang-up; printed."""
    control = FakeVapiControl().start()
    call.control_url = control.control_url(call.call_id)
    try:
        answer = await call.assistant_request()
        print(f"assistant: {(answer.get('assistant') or {}).get('firstMessage', '(no greeting)')}")
        scripted = bool(utterances)
        while True:
            if scripted:
                if not utterances:
                    break
                text = utterances.pop(0)
                print(f"caller: {text}")
            else:
                try:
                    text = (await asyncio.to_thread(input, "caller> ")).strip()
                except EOFError:
                    break
                if not text:
                    continue
            reply = await call.say(text, interrupt_after)
            first = reply.first_content_seconds
            timing = f"{first * 1000:.0f} ms to first words" if first is not None else "silent"
            print(f"assistant: {reply.text or '(nothing)'}   [{timing}]")
            if interrupt_after is not None and call.history[-1]["content"] != reply.text:
                print(f"   (caller cut in; heard: {call.history[-1]['content']!r})")
            for request in control.requests_for(call.call_id):
                print(f"   [VAPI call control] {json.dumps(request.payload)}")
            if any(r.payload["type"] in ("end-call", "transfer") for r in control.requests):
                break
            if any(r.payload.get("endCallAfterSpoken") for r in control.requests):
                break
            control.requests.clear()
        await call.hang_up(summary="Simulated call from the VAPI simulator.")
        print("(hung up; end-of-call-report sent)")
    finally:
        await call.aclose()
        control.stop()


def main(argv: Optional[List[str]] = None) -> int:
    from devtools.launcher import local_settings

    parser = argparse.ArgumentParser(description="Play VAPI against a running Rasa server")
    parser.add_argument("--from", dest="number", help="caller number (E.164); omit: web call")
    parser.add_argument("--url", default="http://127.0.0.1:5005", help="Rasa server base URL")
    parser.add_argument("--say", action="append", default=[], help="scripted utterance")
    parser.add_argument(
        "--interrupt-after", type=int, help="cut every bot answer off after N characters"
    )
    args = parser.parse_args(argv)
    env = local_settings()
    if not env.get("VAPI_SERVER_SECRET"):
        print(
            "VAPI_SERVER_SECRET is neither exported nor in .env: run `make run` once first",
            file=sys.stderr,
        )
        return 2
    call = VapiCall(
        base_url=args.url.rstrip("/"),
        server_secret=env["VAPI_SERVER_SECRET"],
        custom_llm_key=env.get("VAPI_CUSTOM_LLM_KEY") or None,
        number=args.number,
        call_type="inboundPhoneCall" if args.number else "webCall",
    )
    asyncio.run(play_call(call, list(args.say), args.interrupt_after))
    return 0


if __name__ == "__main__":
    sys.exit(main())
