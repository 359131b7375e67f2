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

The call itself is :class:`testkit.vapi_call.VapiCall`, which tests and benchmarks use directly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import List, Optional

from testkit.fake_vapi_control import FakeVapiControl
from testkit.local_env import local_settings
from testkit.vapi_call import VapiCall


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
