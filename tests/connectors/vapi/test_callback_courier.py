"""The callback courier against the fake VAPI API and a real Redis, on a clock the tests move:
retries while VAPI is down, a creation whose answer was lost, a refusal, a takeover that adopts
the dead replica's call, no number on file; and which calls count as a callback's."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Any, Dict, List, Tuple

import pytest

from connectors.vapi.callbacks import CallbackCalls, CallbackCourier
from connectors.vapi.outbound import OutboundCall, VapiApi
from connectors.vapi.wire import Call
from omnichannel import metrics
from omnichannel.addresses import phone_address, user_address
from omnichannel.callbacks.items import callback_item
from omnichannel.identity import IdentityStore
from omnichannel.leases import Lease
from omnichannel.outbound.gate import OutboundGate
from omnichannel.outbound.items import FAILED, REFUSED, SCHEDULED, SENDING, SENT, OutboundQueue
from omnichannel.outbound.policy import CALLBACK, OutboundPolicy
from omnichannel.settings import Settings
from testkit.fake_vapi import FakeVapi
from testkit.phone_numbers import new_phone_number

API_KEY = secrets.token_urlsafe(16)
PHONE_NUMBER_ID = str(uuid.uuid4())


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def vapi() -> FakeVapi:
    fake = FakeVapi(API_KEY, PHONE_NUMBER_ID).start()
    yield fake
    fake.stop()


def settings_for(
    redis_url: str, vapi: FakeVapi, phone_number_id: str = PHONE_NUMBER_ID
) -> Settings:
    return Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "VAPI_API_KEY": API_KEY,
            "VAPI_PHONE_NUMBER_ID": phone_number_id,
            "VAPI_API_BASE_URL": vapi.url,
            "VAPI_ASSISTANT_ID": "asst-callbacks",
        }
    )


class Reports:
    def __init__(self) -> None:
        self.made: List[Tuple[str, str]] = []

    async def __call__(self, item: Any, outcome: str) -> None:
        self.made.append((item.item_id, outcome))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def reports() -> Reports:
    return Reports()


@pytest.fixture
def queue(redis_url: str, vapi: FakeVapi, clock: Clock, reports: Reports) -> OutboundQueue:
    queue = OutboundQueue(redis_url, OutboundGate(OutboundPolicy.from_env({}), clock=clock))
    queue.register(
        CALLBACK, CallbackCourier(settings_for(redis_url, vapi), clock=clock, report=reports)
    )
    return queue


async def booked(queue: OutboundQueue, clock: Clock, phone: str = "") -> Tuple[str, str]:
    """A customer who texted from ``phone`` and booked a callback due now."""
    phone = phone or new_phone_number()
    cid = await IdentityStore().resolve_conversation(phone_address(phone), channel="sms")
    item = callback_item(cid, clock.now, opening="You asked us to call about order 40213.")
    await queue.submit(item, send_now=False)
    return cid, item.item_id


def calls_to(vapi: FakeVapi, phone: str) -> List[Dict[str, Any]]:
    return [c for c in vapi.calls if c["customer"]["number"] == phone]


@pytest.mark.unit
def test_the_create_call_request_is_vapis_createcalldto() -> None:
    call = OutboundCall(
        phone_number_id="pn-1",
        customer_number="+14155550123",
        first_message="You asked us to call about order 4 0 2 1 3.",
        metadata={"conversation_id": "c_1", "callback_id": "o_1"},
        assistant_id="asst-1",
        name="callback o_1",
    )
    assert call.body() == {
        "phoneNumberId": "pn-1",
        "customer": {"number": "+14155550123"},
        "assistantId": "asst-1",
        "name": "callback o_1",
        "assistantOverrides": {
            "firstMessage": "You asked us to call about order 4 0 2 1 3.",
            "firstMessageMode": "assistant-speaks-first",
            "serverMessages": [
                "status-update",
                "end-of-call-report",
                "user-interrupted",
                "tool-calls",
                "transfer-destination-request",
            ],
            "metadata": {"conversation_id": "c_1", "callback_id": "o_1"},
        },
    }
    transient = OutboundCall("pn-1", "+14155550123", "Hi.", {}, public_base_url="https://x.test")
    body = transient.body()
    assert "assistantId" not in body
    assert body["assistant"]["model"] == {
        "provider": "custom-llm",
        "url": "https://x.test/webhooks/vapi",
        "model": "rasa",
        "metadataSendMode": "variable",
        "timeoutSeconds": 20,
    }


async def test_a_callback_due_now_is_placed_once(queue, clock, vapi) -> None:
    phone = new_phone_number()
    cid, item_id = await booked(queue, clock, phone)
    await queue.poll_once()
    await queue.poll_once()
    [call] = calls_to(vapi, phone)
    assert call["assistantId"] == "asst-callbacks"
    assert call["assistantOverrides"]["metadata"] == {
        "conversation_id": cid,
        "callback_id": item_id,
    }
    item = await queue.store.get(cid, item_id)
    assert item is not None and item.status == SENT and item.outcome["call_id"] == call["id"]


async def test_vapi_down_is_retried_later(queue, clock, vapi) -> None:
    phone = new_phone_number()
    cid, item_id = await booked(queue, clock, phone)
    retried = metrics.CALLBACKS.labels(outcome="retried")._value.get()
    vapi.fail_next_create(503)
    await queue.poll_once()
    item = await queue.store.get(cid, item_id)
    assert item is not None and item.status == SCHEDULED and item.reason == "vapi_unavailable"
    assert item.due == clock.now + 60 and calls_to(vapi, phone) == []
    assert metrics.CALLBACKS.labels(outcome="retried")._value.get() == retried + 1
    clock.now += 59
    await queue.poll_once()
    assert calls_to(vapi, phone) == []
    clock.now += 1
    await queue.poll_once()
    assert len(calls_to(vapi, phone)) == 1
    assert (await queue.store.get(cid, item_id)).status == SENT


async def test_a_lost_answer_is_reconciled_not_dialled_again(queue, clock, vapi) -> None:
    clock.now = time.time()  # the fake VAPI's createdAt is the real clock, as VAPI's is its own
    phone = new_phone_number()
    cid, item_id = await booked(queue, clock, phone)
    reconciled = metrics.CALLBACKS.labels(outcome="reconciled")._value.get()
    vapi.fail_after_create(500)
    await queue.poll_once()
    [call] = calls_to(vapi, phone)
    item = await queue.store.get(cid, item_id)
    assert item is not None and item.status == SENT and item.outcome["call_id"] == call["id"]
    assert metrics.CALLBACKS.labels(outcome="reconciled")._value.get() == reconciled + 1


async def test_a_refused_request_fails_and_is_told(redis_url, vapi, clock, reports) -> None:
    queue = OutboundQueue(redis_url, OutboundGate(OutboundPolicy.from_env({}), clock=clock))
    wrong = settings_for(redis_url, vapi, phone_number_id="not-ours")
    queue.register(CALLBACK, CallbackCourier(wrong, clock=clock, report=reports))
    phone = new_phone_number()
    cid, item_id = await booked(queue, clock, phone)
    await queue.poll_once()
    item = await queue.store.get(cid, item_id)
    assert item is not None and item.status == FAILED and item.reason == "vapi_refused"
    assert reports.made == [(item_id, "failed")] and calls_to(vapi, phone) == []


async def test_a_takeover_adopts_the_call_the_dead_replica_made(redis_url, vapi, clock) -> None:
    courier = CallbackCourier(settings_for(redis_url, vapi), clock=clock)
    phone = new_phone_number()
    cid = await IdentityStore().resolve_conversation(phone_address(phone), channel="sms")
    clock.now = time.time()
    item = callback_item(cid, clock.now, opening="Hi.")
    # The dead replica's request reached VAPI: the call exists with the item's id.
    placed = await VapiApi(API_KEY, vapi.url).create_call(
        OutboundCall(
            PHONE_NUMBER_ID,
            phone,
            "Hi.",
            {"conversation_id": cid, "callback_id": item.item_id},
            "asst-callbacks",
        )
    )
    item.status = SENDING
    taken_over = Lease("outbound_send", cid, item.item_id, {}, attempt=2)
    delivered = await courier.deliver(item, taken_over, "voice")
    assert delivered.status == SENT and delivered.detail == {"call_id": placed.call_id}
    assert len(calls_to(vapi, phone)) == 1


async def test_a_takeover_that_cannot_ask_vapi_waits_and_asks_before_dialling(
    redis_url, vapi, clock
) -> None:
    courier = CallbackCourier(settings_for(redis_url, vapi), clock=clock)
    phone = new_phone_number()
    cid = await IdentityStore().resolve_conversation(phone_address(phone), channel="sms")
    clock.now = time.time()
    item = callback_item(cid, clock.now, opening="Hi.")
    metadata = {"conversation_id": cid, "callback_id": item.item_id}
    placed = await VapiApi(API_KEY, vapi.url).create_call(
        OutboundCall(PHONE_NUMBER_ID, phone, "Hi.", metadata, "asst-callbacks")
    )
    item.status = SENDING
    vapi.fail_next_list(503)
    held = await courier.deliver(item, Lease("outbound_send", cid, item.item_id, {}, 2), "voice")
    assert (held.status, held.detail) == (SCHEDULED, {"attempts": 1, "unsure": True})
    # The next attempt is a fresh lease, yet it still asks VAPI first.
    item.outcome = held.detail
    again = await courier.deliver(item, Lease("outbound_send", cid, item.item_id, {}, 1), "voice")
    assert again.status == SENT and again.detail == {"call_id": placed.call_id}
    assert len(calls_to(vapi, phone)) == 1


async def test_no_number_on_file_is_refused(queue, clock, vapi) -> None:
    cid = await IdentityStore().resolve_conversation(user_address("web-only"), channel="chat")
    item = callback_item(cid, clock.now, opening="Hi.")
    await queue.submit(item, send_now=False)
    await queue.poll_once()
    found = await queue.store.get(cid, item.item_id)
    assert found is not None and found.status == REFUSED


async def test_only_the_callbacks_own_call_continues_its_conversation(queue, clock, vapi) -> None:
    phone = new_phone_number()
    cid, item_id = await booked(queue, clock, phone)
    await queue.poll_once()
    [call] = calls_to(vapi, phone)
    calls = CallbackCalls(queue.store)
    metadata = {"conversation_id": cid, "callback_id": item_id}

    def call_of(call_id: str, kind: str = "outboundPhoneCall", number: str = phone) -> Call:
        return Call.parse_obj(
            {
                "id": call_id,
                "type": kind,
                "customer": {"number": number},
                "assistantOverrides": {"metadata": metadata},
            }
        )

    assert await calls.conversation_of(call_of(call["id"])) == cid
    assert await calls.conversation_of(call_of(str(uuid.uuid4()))) is None, "another call"
    assert await calls.conversation_of(call_of(call["id"], "webCall")) is None, "a web call"
