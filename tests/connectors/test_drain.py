"""Graceful drain: a Rasa server given SIGTERM stops taking work, finishes what it
accepted, closes chat sockets with 1012 and exits within its bound.

The server drained is a replica of the shared stack started for this test (same Redis, action
server, fake LLM and fake Twilio), so the shared one keeps serving the other tests; the customer
"reconnects" to the shared one, as a load balancer would send them to another replica.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time

import httpx
import pytest
import websockets

from connectors.drain import CLOSE_SERVICE_RESTART, DEFAULT_DRAIN_SECONDS, Drain
from connectors.ops.channel import OpsInput
from omnichannel.errors import ConfigError
from omnichannel.tasks import BackgroundTasks
from testkit.fake_llm import FakeLlm, LlmReply
from testkit.fake_twilio import FakeTwilio
from testkit.phone_numbers import new_phone_number
from testkit.stack import RasaStack
from tests.connectors.webchat.helpers import (
    open_chat,
    recv_frame,
    recv_until,
    tracker_events,
    user_token,
    ws_url,
)
from tests.support import GIBBERISH, post_sms

READYZ = "/webhooks/ops/readyz"
#: The LLM's answer takes this long, so both turns are still running when SIGTERM comes.
LLM_DELAY = 7.0


async def _closed_with(ws: websockets.WebSocketClientProtocol, timeout: float) -> int:
    """Reads until the server closes the socket; its close code."""
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    return ws.close_code


@pytest.mark.unit
async def test_a_drain_waits_for_in_flight_work_started_meanwhile_within_its_bound() -> None:
    replies = BackgroundTasks("late replies")
    feed = BackgroundTasks("a feed reader", in_flight=False)
    done = []

    async def reply(seconds: float) -> None:
        await asyncio.sleep(seconds)
        done.append(seconds)
        if seconds == 0.2:  # work that arrives while draining is waited for too
            replies.start(reply(0.3), "follow-up")

    replies.start(reply(0.2), "first")
    replies.start(reply(60), "too slow")
    reader = feed.start(asyncio.sleep(3600), "never ends by itself")
    drain = Drain()
    drain.seconds = 1.0
    started = time.monotonic()
    await asyncio.gather(drain.run(), drain.run())  # a second listener waits for the same drain
    assert drain.draining
    # At its 1 s bound, long before the slow work would end: a loaded machine may add seconds.
    assert 1.0 <= time.monotonic() - started < 10
    assert done == [0.2, 0.3]
    assert len(replies) == 1 and not reader.done()
    await replies.cancel_all()
    await feed.cancel_all()


@pytest.mark.unit
def test_drain_seconds_is_an_ops_option() -> None:
    assert OpsInput.from_credentials({"drain_seconds": 25}).drain_seconds == 25
    assert OpsInput.from_credentials(None).drain_seconds == DEFAULT_DRAIN_SECONDS
    with pytest.raises(ConfigError, match="drain_seconds"):
        OpsInput.from_credentials({"drain_seconds": -1})


@pytest.mark.rasa_server
async def test_sigterm_drains_in_flight_turns_then_exits(
    rasa_stack: RasaStack, fake_llm: FakeLlm, fake_twilio: FakeTwilio
) -> None:
    replica = await asyncio.to_thread(rasa_stack.replica)
    secret = rasa_stack.env["WEBCHAT_JWT_SECRET"]
    busy_token = user_token(secret, "drain-busy-" + secrets.token_hex(4))
    phone = new_phone_number()
    try:
        async with httpx.AsyncClient(base_url=replica.base_url, timeout=10) as http:
            assert (await http.get(READYZ)).status_code == 200
            busy = await open_chat(replica, busy_token)
            idle = await open_chat(
                replica, user_token(secret, "drain-idle-" + secrets.token_hex(4))
            )
            fake_llm.reset()
            fake_llm.script(*[LlmReply(content="Worth the wait.", delay=LLM_DELAY)] * 2)

            # An SMS whose turn outlives the 5 s inline budget: its reply is due by REST.
            sms = asyncio.create_task(post_sms(replica, phone, GIBBERISH))
            await busy.say(GIBBERISH)
            assert (await recv_until(busy.ws, lambda f: f["type"] == "ack"))["duplicate"] is False
            await recv_until(busy.ws, lambda f: f["type"] == "typing" and f["on"])
            assert "<Message>" not in (await sms).text, "acknowledged, to be answered by REST"
            assert fake_twilio.messages_to(phone) == []

            sigterm_at = time.monotonic()
            os.killpg(replica.rasa_proc.pid, signal.SIGTERM)
            while (ready := await http.get(READYZ)).status_code == 200:
                # At once: long before the turns in flight (LLM_DELAY) are done.
                assert time.monotonic() - sigterm_at < LLM_DELAY - 3, "readiness must drop first"
            assert ready.status_code == 503 and ready.json() == {"status": "draining"}

        # An idle socket is told to reconnect elsewhere at once; a new one is not kept.
        assert await _closed_with(idle.ws, 5) == CLOSE_SERVICE_RESTART
        async with websockets.connect(ws_url(replica)) as late:
            assert await _closed_with(late, 5) == CLOSE_SERVICE_RESTART
        assert time.monotonic() - sigterm_at < LLM_DELAY - 3

        # A message sent now is not acknowledged (the client keeps it to resend)...
        unacked = await busy.say("what's your refund policy")
        # ...while the turn in flight finishes and its reply reaches the socket, then 1012.
        frames = []
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                frames.append(await recv_frame(busy.ws, 20))
        assert busy.ws.close_code == CLOSE_SERVICE_RESTART
        bot = [f["message"]["text"] for f in frames if f["type"] == "message"]
        assert bot == ["Worth the wait."]
        assert not [f for f in frames if f["type"] == "ack"]

        code = await asyncio.to_thread(replica.rasa_proc.wait, DEFAULT_DRAIN_SECONDS + 10)
        took = time.monotonic() - sigterm_at
        assert took < DEFAULT_DRAIN_SECONDS, f"exited {took:.1f} s after SIGTERM"
        assert code == 0, replica.rasa_log()[-3000:]
        assert "drained in" in replica.rasa_log()
        # The SMS reply due by REST was sent before the process went.
        assert [m.body for m in fake_twilio.messages_to(phone)] == ["Worth the wait."]

        # Reconnected (to the other replica), the client resends what was not acknowledged.
        back = await open_chat(rasa_stack, busy_token)
        assert "Worth the wait." in [m["text"] for m in back.history["messages"]]
        await back.say("what's your refund policy", unacked)
        ack = await recv_until(back.ws, lambda f: f["type"] == "ack")
        assert ack == {"type": "ack", "id": unacked, "duplicate": False}
        await back.turn_done()
        await back.ws.close()
        users = [
            e["text"]
            for e in tracker_events(rasa_stack, back.conversation_id)
            if e["event"] == "user"
        ]
        assert users == [GIBBERISH, "what's your refund policy"]
    finally:
        replica.stop()
