"""Chat messages as durable in-flight work: an acknowledged message is processed once
(in its conversation's event log once), even when the replica that acknowledged it dies.

A "dead" replica is an owner that records work and never renews it; the replica that takes it
over is the shared stack's own sweeper, which runs the real Rasa turn.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import time
from typing import Any, Dict, List, Tuple

import pytest

from connectors.drain import CLOSE_SERVICE_RESTART
from connectors.turns.durable import DurableTurns
from connectors.webchat.auth import ChatIdentity
from connectors.webchat.channel import WebChatInput
from connectors.webchat.connection import HANDOFF_SECONDS, ChatConnection
from connectors.webchat.turns import CHAT_TURN, message_id_of, turn_payload
from connectors.webchat.wire import TextFrame
from omnichannel.addresses import user_address
from omnichannel.channels import CHAT
from omnichannel.leases import InFlightWork, Lease
from testkit.fake_llm import FakeLlm, LlmReply
from testkit.stack import RasaStack
from tests.connectors.webchat.helpers import (
    Chat,
    RecordedSocket,
    append_events,
    drain,
    open_chat,
    recv_until,
    tracker_events,
    user_token,
)
from tests.support import GIBBERISH

#: The dead replica's lease: short, so the stack's sweeper (every second) takes over soon.
DEAD_LEASE = 1.0
#: The lease of messages queued on a live socket: renewed every third of it, so a renewal may be
#: two thirds of a second late on a loaded machine before the lease lapses.
QUEUED_LEASE = 1.0


async def lease_until(work: InFlightWork, conversation_id: str, item_id: str) -> int:
    """Where the item's lease ends (Redis's milliseconds)."""
    return int((await work.state(conversation_id, item_id))["lease_until"])


def _work(url: str, owner: str, lease: float) -> InFlightWork:
    return InFlightWork(url, CHAT_TURN, lease_seconds=lease, keep_seconds=600, owner=owner)


async def test_queued_messages_keep_their_leases_and_a_drain_hands_them_off(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages waiting behind a long turn stay with the live replica; at the drain's bound
    they are handed off at once (not left to lapse), the socket closes with 1012."""
    monkeypatch.setenv("WEBCHAT_JWT_SECRET", secrets.token_urlsafe(32))
    channel = WebChatInput.from_credentials({})
    channel.turns = DurableTurns(_work(redis_url, "replica-a", lease=QUEUED_LEASE), CHAT)
    socket = RecordedSocket()
    connection = ChatConnection(socket, channel, None)
    connection.identity = ChatIdentity(user_address("drained"))
    cid = connection.conversation_id = "c_" + secrets.token_hex(8)
    ids = [f"queued-{n}-{secrets.token_hex(3)}" for n in range(3)]
    for n, client_id in enumerate(ids):
        await connection._accept(TextFrame(type="message", id=client_id, text=f"message {n}"))
    assert [f for f in socket.sent if f["type"] == "ack"] == [
        {"type": "ack", "id": client_id, "duplicate": False} for client_id in ids
    ]

    other = _work(redis_url, "replica-b", lease=QUEUED_LEASE)
    # Wait until renewals have carried every lease two lease lengths past its first end.
    first_ends = [await lease_until(other, cid, client_id) for client_id in ids]
    deadline = time.monotonic() + 30
    while any(
        [
            await lease_until(other, cid, client_id) < end + 2000 * QUEUED_LEASE
            for client_id, end in zip(ids, first_ends, strict=True)
        ]
    ):
        assert time.monotonic() < deadline, "the queued messages' leases were not renewed"
        await asyncio.sleep(0.05)
    assert [await other.take_over(cid, client_id) for client_id in ids] == [None] * 3

    drain_deadline = time.monotonic() + HANDOFF_SECONDS + 0.2
    await connection.close_for_restart(drain_deadline)
    assert time.monotonic() < drain_deadline, "closed after the drain's bound"
    assert socket.closed == (CLOSE_SERVICE_RESTART, "server restarting; reconnect")
    # Three renewal periods: a renewal still running would have taken a lease back by now.
    await asyncio.sleep(QUEUED_LEASE)
    taken = [await other.take_over(cid, client_id) for client_id in ids]
    assert [(t.attempt, t.payload["text"]) for t in taken if t] == [
        (2, "message 0"),
        (2, "message 1"),
        (2, "message 2"),
    ]
    assert taken[0].payload["metadata"] == {
        "channel": "chat",
        "address": "user:drained",
        "client_message_id": ids[0],
    }

    # The widget resends after reconnecting: acknowledged again, not accepted twice.
    again = ChatConnection(RecordedSocket(), channel, None)
    again.identity, again.conversation_id = connection.identity, cid
    await again._accept(TextFrame(type="message", id=ids[1], text="message 1"))
    assert again.ws.sent == [{"type": "ack", "id": ids[1], "duplicate": True}]
    assert again.turns.queue.empty()


async def test_a_drain_hands_off_what_a_closed_tab_left_waiting(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The customer closed the tab; its accepted messages wait for the worker (busy with a long
    turn): the drain's web chat step hands them off too, without touching the closed socket."""
    monkeypatch.setenv("WEBCHAT_JWT_SECRET", secrets.token_urlsafe(32))
    channel = WebChatInput.from_credentials({})
    channel.turns = DurableTurns(_work(redis_url, "replica-a", lease=30), CHAT)
    connection = ChatConnection(RecordedSocket(), channel, None)
    connection.identity = ChatIdentity(user_address("tab-closed"))
    cid = connection.conversation_id = "c_" + secrets.token_hex(8)
    ids = [f"left-{n}-{secrets.token_hex(3)}" for n in range(2)]
    for client_id in ids:
        await connection._accept(TextFrame(type="message", id=client_id, text="are you there"))
    channel.workers.add(connection)  # its worker runs on; the socket is gone (not in connections)

    await channel._close_sockets(time.monotonic() + HANDOFF_SECONDS + 0.2)
    assert connection.ws.closed is None
    other = _work(redis_url, "replica-b", lease=30)
    assert [(await other.take_over(cid, client_id)).attempt for client_id in ids] == [2, 2]


# -- takeover through the shared stack -------------------------------------------------------


async def _dead_replica_accepts(
    stack: RasaStack, chat: Chat, sub: str, texts: List[str]
) -> Tuple[InFlightWork, List[str]]:
    """Records ``texts`` as a replica that acknowledged them (one after another) and died at
    once; returns the client ids. They are recorded newest first and their ids sort newest
    first, so neither the sweep's index order nor the ids' order is theirs."""
    dead = _work(stack.env["REDIS_URL"], "dead-replica-" + secrets.token_hex(3), DEAD_LEASE)
    address = str(user_address(sub))
    ids = [f"{'zyx'[n]}-{secrets.token_hex(6)}" for n in range(len(texts))]
    payloads = []
    for client_id, text in zip(ids, texts, strict=True):
        payloads.append(turn_payload(TextFrame(type="message", id=client_id, text=text), address))
        await asyncio.sleep(0.01)
    for client_id, payload in reversed(list(zip(ids, payloads, strict=True))):
        assert isinstance(await dead.record(chat.conversation_id, client_id, payload), Lease)
    return dead, ids


async def _outcomes(work: InFlightWork, cid: str, ids: List[str]) -> List[Dict[str, Any]]:
    """Each item's outcome once they are all done (taken over and finished by the stack)."""
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        states = [await work.state(cid, client_id) for client_id in ids]
        if all(state.get("state") == "done" for state in states):
            return [json.loads(state["outcome"]) for state in states]
        await asyncio.sleep(0.25)
    raise AssertionError(f"not taken over and finished in time: {states}")


@pytest.mark.rasa_server
async def test_messages_a_dead_replica_acknowledged_are_processed_once_in_order(
    rasa_stack: RasaStack, secret: str
) -> None:
    sub = "orphaned-" + secrets.token_hex(4)
    tab = await open_chat(rasa_stack, user_token(secret, sub))  # the customer's other tab
    texts = ["hello", "what's your refund policy", "where is my order"]
    dead, ids = await _dead_replica_accepts(rasa_stack, tab, sub, texts)

    # The newest, resent to a live replica (as the widget resends a message whose ack it did
    # not get) while the dead one still holds it: a duplicate, not run twice.
    await tab.say(texts[2], ids[2])
    assert await recv_until(tab.ws, lambda f: f["type"] == "ack") == {
        "type": "ack",
        "id": ids[2],
        "duplicate": True,
    }

    outcomes = await _outcomes(dead, tab.conversation_id, ids)
    assert outcomes == [{"processed": True, "attempt": 2}] * 3
    events = tracker_events(rasa_stack, tab.conversation_id)
    users = [e for e in events if e["event"] == "user"]
    assert [e["text"] for e in users] == texts  # once each, in the order acknowledged
    assert [e["message_id"] for e in users] == [
        message_id_of(tab.conversation_id, client_id) for client_id in ids
    ]
    assert [e["metadata"]["client_message_id"] for e in users] == ids
    # Each got its answer, and the open tab saw the turns through the live feed.
    user_at = [events.index(e) for e in users] + [len(events)]
    assert all(
        any(e["event"] == "bot" for e in events[start:end])
        for start, end in zip(user_at, user_at[1:], strict=False)
    )
    frames = await drain(tab.ws, 2.0)
    await tab.ws.close()
    live = [f["message"] for f in frames if f["type"] == "message"]
    assert [m["text"] for m in live if m["role"] == "user"] == texts
    assert any("30 days" in m["text"] for m in live if m["role"] == "bot")


@pytest.mark.rasa_server
async def test_a_message_the_dead_replica_had_processed_is_not_run_again(
    rasa_stack: RasaStack, secret: str
) -> None:
    sub = "crashed-late-" + secrets.token_hex(4)
    tab = await open_chat(rasa_stack, user_token(secret, sub))
    cid = tab.conversation_id
    client_id = "late-" + secrets.token_hex(6)
    # The dead replica had run the turn (its events are stored) but died before marking it done.
    append_events(
        rasa_stack,
        cid,
        [
            {
                "event": "user",
                "timestamp": time.time(),
                "text": "what's your refund policy",
                "message_id": message_id_of(cid, client_id),
                "metadata": {"channel": "chat", "client_message_id": client_id},
                "parse_data": {},
            },
            {"event": "bot", "timestamp": time.time(), "text": "Answered before the crash."},
            {"event": "action", "timestamp": time.time(), "name": "action_listen"},
        ],
    )
    await drain(tab.ws, 1.0)  # the live copies of those events
    dead = _work(rasa_stack.env["REDIS_URL"], "dead-replica-" + secrets.token_hex(3), DEAD_LEASE)
    frame = TextFrame(type="message", id=client_id, text="what's your refund policy")
    await dead.record(cid, client_id, turn_payload(frame, str(user_address(sub))))

    assert await _outcomes(dead, cid, [client_id]) == [{"processed": False, "attempt": 2}]
    events = tracker_events(rasa_stack, cid)
    assert [e["text"] for e in events if e["event"] == "user"] == ["what's your refund policy"]
    assert [e["text"] for e in events if e["event"] == "bot"] == ["Answered before the crash."]
    assert [f for f in await drain(tab.ws, 1.5) if f["type"] in ("message", "typing")] == []

    # The customer's resend after the takeover: acknowledged as a duplicate, nothing runs.
    await tab.say("what's your refund policy", client_id)
    assert await recv_until(tab.ws, lambda f: f["type"] == "ack") == {
        "type": "ack",
        "id": client_id,
        "duplicate": True,
    }
    assert [f for f in await drain(tab.ws, 1.5) if f["type"] in ("message", "typing")] == []
    await tab.ws.close()
    assert len([e for e in tracker_events(rasa_stack, cid) if e["event"] == "user"]) == 1


@pytest.mark.rasa_server
async def test_a_message_acknowledged_by_a_replica_killed_mid_turn_is_answered_by_another(
    rasa_stack: RasaStack, secret: str, fake_llm: FakeLlm
) -> None:
    """The real thing: a replica is SIGKILLed while its turn waits for the LLM; the surviving
    replica takes the message over and the customer's tab on it gets the answer, once."""
    replica = await asyncio.to_thread(rasa_stack.replica)
    try:
        token = user_token(secret, "killed-" + secrets.token_hex(4))
        tab = await open_chat(rasa_stack, token)
        chat = await open_chat(replica, token)
        fake_llm.reset()
        answer = "Thanks for waiting."
        fake_llm.script(LlmReply(content=answer, delay=20), LlmReply(content=answer))
        client_id = await chat.say(GIBBERISH)
        assert (await recv_until(chat.ws, lambda f: f["type"] == "ack"))["duplicate"] is False
        for _ in range(200):  # until the turn waits for the LLM: nothing of it is stored yet
            if fake_llm.requests:
                break
            await asyncio.sleep(0.05)
        assert len(fake_llm.requests) == 1
        killed_at = time.monotonic()
        os.killpg(replica.rasa_proc.pid, signal.SIGKILL)

        reply = await tab.next_bot(timeout=40)
        took = time.monotonic() - killed_at
        await tab.ws.close()
    finally:
        replica.stop()
    assert reply["text"] == answer
    # The item's lease (6 s) and the dead replica's conversation lock (10 s) both lapse first.
    assert 4 < took < 20, took
    events = tracker_events(rasa_stack, tab.conversation_id)
    users = [e for e in events if e["event"] == "user"]
    assert [e["metadata"]["client_message_id"] for e in users] == [client_id]
    assert [e["text"] for e in events if e["event"] == "bot"] == [answer]
