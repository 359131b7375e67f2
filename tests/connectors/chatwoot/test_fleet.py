"""The Chatwoot mirror on a fleet: a replica killed while it is creating the hand-off's Chatwoot
conversation leaves its sync to another replica, which finds the conversation Chatwoot made
(rather than making a second one) and mirrors the rest, each message once."""

from __future__ import annotations

import os
import signal

import pytest

from tests.connectors.chatwoot.conftest import ChatwootStack
from tests.connectors.handoff.test_sms_handoff import QUEUED
from tests.connectors.inbox.helpers import wait_for
from tests.connectors.twilio_sms.helpers import conversation_of, inbound, post_signed, replies
from tests.connectors.webchat.helpers import fresh_phone

# The Chatwoot stack is started once per worker: its modules run together.
pytestmark = [pytest.mark.rasa_server, pytest.mark.xdist_group("chatwoot")]


def test_a_replica_killed_mid_sync_loses_nothing_and_doubles_nothing(
    chatwoot_stack: ChatwootStack,
) -> None:
    world = chatwoot_stack
    chatwoot = world.chatwoot
    replica = world.stack.replica()
    try:
        created_before = chatwoot.calls("create_conversation")
        gate = chatwoot.hold("create_conversation")
        phone = fresh_phone()
        answer = post_signed(
            world.stack,
            inbound(world.stack, phone, "i want to talk to a person"),
            base_url=replica.base_url,
        )
        assert replies(answer) == [QUEUED]
        assert chatwoot.held.wait(30), "the replica's sync reached Chatwoot"
        os.killpg(replica.rasa_proc.pid, signal.SIGKILL)
        replica.rasa_proc.wait(10)
        gate.set()  # Chatwoot finishes the request nobody waits for any more
        chatwoot.release("create_conversation")

        cid = conversation_of(world.redis, phone)
        promise = f"Assistant (SMS): {QUEUED}"
        [conversation] = wait_for(lambda: chatwoot.conversation_of(cid), what="the conversation")
        contents = wait_for(
            lambda: (
                promise in (c := [m.content for m in chatwoot.messages_of(conversation.id)]) and c
            ),
            timeout=60,
            what="the mirror finished by the surviving replica",
        )
    finally:
        replica.stop()
    assert chatwoot.calls("create_conversation") == created_before + 1, "found, not made again"
    assert len(chatwoot.conversation_of(cid)) == 1
    assert (
        contents[0].startswith("Hand-off from SMS")
        and "[SMS] i want to talk to a person" in contents
    )
    assert len(contents) == len(set(contents)), "each message once"
    assert "taken over" in world.stack.rasa_log()
