"""A hand-off as operators and support leads see it, on the shared stack: the agent's reply
through the inbox is one trace from the inbox's request down to Twilio's send, and the insight
figures count the hand-off, the agent's reply and how the hand-off ended; opening the
conversation in the inbox is audit-logged with the agent's id."""

from __future__ import annotations

import datetime
import time

import httpx
import pytest

from omnichannel.audit import conversation_digest
from testkit.fake_otlp import FakeOtlp
from testkit.fake_twilio import FakeTwilio
from testkit.stack import RasaStack
from tests.connectors.inbox.helpers import inbox, reply, token_for, wait_for
from tests.connectors.twilio_sms.helpers import conversation_of, text_sms
from tests.connectors.webchat.helpers import fresh_phone
from tests.observability.test_traces import ancestors, one, trace_with

pytestmark = pytest.mark.rasa_server


def _insight(stack: RasaStack, path: str, **params: str) -> dict:
    answer = httpx.get(
        f"{stack.base_url}/webhooks/insight/api/{path}",
        params=params,
        headers={"Authorization": f"Bearer {stack.env['RASA_AUTH_TOKEN']}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_hand_off_shows_in_traces_insight_and_the_audit_log(
    rasa_stack: RasaStack, fake_otlp: FakeOtlp, fake_twilio: FakeTwilio, stack_redis
) -> None:
    today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
    before = _insight(rasa_stack, "report", **{"from": today, "to": today})["total"]
    phone = fresh_phone()
    text_sms(rasa_stack, phone, "i want to talk to a person")
    cid = conversation_of(stack_redis, phone)
    agent_id = f"agent-dana-{time.time_ns()}"
    dana = token_for(rasa_stack, "Dana", agent_id=agent_id)
    opened = inbox(rasa_stack, "conversation", dana, {"conversation_id": cid})
    assert opened.status_code == 200, opened.text
    assert inbox(rasa_stack, "claim", dana, {"conversation_id": cid}).status_code == 200

    since = time.time_ns()
    sent_before = len(fake_twilio.messages_to(phone))
    answer = reply(rasa_stack, dana, cid, "Hi, Dana here.", "sms")
    assert answer.status_code == 202, answer.text
    wait_for(lambda: fake_twilio.messages_to(phone)[sent_before:], what="the agent's SMS")
    root = "omni_inbox.inbox_reply"
    spans = trace_with(fake_otlp, root, since, ["twilio.send"])
    assert root in ancestors(one(spans, "twilio.send"), spans)
    assert len({s.trace_id for s in spans}) == 1

    resolved = inbox(rasa_stack, "resolve", dana, {"conversation_id": cid})
    assert resolved.status_code == 200, resolved.text

    def counted():
        total = _insight(rasa_stack, "report", **{"from": today, "to": today})["total"]
        ended = total["handoff_endings"].get("resolved", 0)
        return total if ended > before["handoff_endings"].get("resolved", 0) else None

    after = wait_for(counted, what="the hand-off's end in the insight figures")
    assert after["handoffs"] == before["handoffs"] + 1
    assert after["agent_replies"] == before["agent_replies"] + 1
    assert after["handed_off"] == before["handed_off"] + 1

    entries = _insight(rasa_stack, "audit", day=today)["entries"]
    assert any(
        e["action"] == "inbox.conversation"
        and e["actor"] == f"agent:{agent_id}"
        and e["conversation"] == conversation_digest(cid)
        for e in entries
    ), entries[-3:]
