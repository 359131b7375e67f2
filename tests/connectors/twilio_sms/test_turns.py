"""SMS turns and replies as durable in-flight work (connectors/twilio_sms/turns.py, outbox.py):
a replica that dies mid-send or mid-turn leaves its items to another replica, which finishes
them exactly once; a draining replica hands off what it cannot finish.

The outbox runs on a real Redis and the local fake of Twilio's API (no Rasa): a "dead replica"
records work with a short lease and stops; another owner's sweeper finishes it. Turns left by a
dead replica are taken over by the shared stack's own sweeper (the Rasa server process).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import secrets
import time
from typing import Awaitable, Callable, Dict, List, Union

import httpx
import pytest
from prometheus_client import REGISTRY
from sanic import Sanic

from connectors.drain import drain_of
from connectors.twilio_sms.channel import TwilioSmsInput
from connectors.twilio_sms.outbox import SMS_OUTBOX, SmsOutbox
from connectors.twilio_sms.turns import SMS_TURN
from connectors.twilio_sms.wire import InboundSms
from omnichannel.addresses import phone_address
from omnichannel.channels import SMS
from omnichannel.identity import IdentityStore
from omnichannel.leases import DEFAULT_LEASE_SECONDS, InFlightWork, Takeover
from omnichannel.rendering.sms import SmsMessage
from omnichannel.settings import Settings
from omnichannel.sms_sender import SmsSender
from testkit.fake_llm import FakeLlm, LlmReply
from testkit.fake_twilio import AFTER_CREATE_DROP, FakeTwilio
from testkit.phone_numbers import new_phone_number
from testkit.processes import RedisServer, free_port
from testkit.stack import RasaStack
from testkit.twilio_webhook import new_sid, signed_sms, sms_form
from tests.connectors.twilio_sms.helpers import (
    AgentWithoutLocks,
    channel_env,
    conversation_of,
    post_signed,
    replies,
    serve_app,
    stack_settings,
    user_events,
)
from tests.support import GIBBERISH

PARTS = [SmsMessage(body="Your refund is on its way."), SmsMessage(body="Anything else?")]
OUR_NUMBER = "+15005550006"


def dead_owner() -> str:
    return f"dead-replica/{secrets.token_hex(4)}"


async def wait_until_done(work: InFlightWork, cid: str, item_id: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = await work.state(cid, item_id)
        if state.get("state") == "done":
            return state
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{work.kind} {item_id} not done within {timeout:.0f} s: {state}")


# ---------------------------------------------------------------------------------------------
# The outbox, without Rasa
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def twilio_settings(redis_url: str, fake_twilio: FakeTwilio) -> Settings:
    return Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "PUBLIC_BASE_URL": "https://bot.example.com",
            "TWILIO_ACCOUNT_SID": fake_twilio.account_sid,
            "TWILIO_AUTH_TOKEN": fake_twilio.auth_token,
            "TWILIO_PHONE_NUMBER": OUR_NUMBER,
            "TWILIO_API_BASE_URL": fake_twilio.url,
        }
    )


def outbox_of(settings: Settings, **options) -> SmsOutbox:
    """An outbox of a replica whose sender uses ``settings`` (read at each send)."""
    return SmsOutbox(
        settings.redis_url,
        lambda: SmsSender(settings, backoff_seconds=0.01, reconcile_delay_seconds=0),
        keep_seconds=600,
        **options,
    )


async def _customer() -> tuple[str, str]:
    number = new_phone_number()
    return number, await IdentityStore().resolve_conversation(phone_address(number), channel=SMS)


async def settled(condition: Callable[[], Awaitable[bool]], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "not settled in time"
        await asyncio.sleep(0.05)


async def _is(value: Union[Awaitable[float], float], expected: float) -> bool:
    return (await value if inspect.isawaitable(value) else value) == expected


def outbox_depth() -> float:
    return REGISTRY.get_sample_value("omnichannel_in_flight_work", {"kind": SMS_OUTBOX})


@pytest.mark.parametrize("sent_before_dying", [0, 1, 2], ids=["none", "one part", "all parts"])
async def test_a_reply_left_by_a_dead_replica_is_sent_once_per_part(
    sent_before_dying: int, twilio_settings: Settings, fake_twilio: FakeTwilio
) -> None:
    """The dead replica recorded a two-part reply and sent some of it (the last send dropped:
    created at Twilio, never acknowledged). The live replica's sweeper takes the reply over,
    finds what Twilio already has, and sends only the rest."""
    number, cid = await _customer()
    sid = new_sid()
    dead = outbox_of(twilio_settings, lease_seconds=0.3, owner=dead_owner())
    lease = await dead.post(cid, sid, PARTS, number, OUR_NUMBER)
    assert lease is not None
    if sent_before_dying:
        # The dead replica's sends went out (the last one's answer never came: it was found in
        # Twilio's records); it died before recording that the reply was sent.
        fake_twilio.fail_after_create(AFTER_CREATE_DROP)
        sender = SmsSender(twilio_settings, reconcile_delay_seconds=0)
        await sender.send_rendered(cid, PARTS[:sent_before_dying], to=number)
    assert len(fake_twilio.messages_to(number)) == sent_before_dying
    assert await dead.post(cid, sid, PARTS, number, OUR_NUMBER) is None  # recorded once

    live = outbox_of(twilio_settings)
    sweeper = Takeover(interval_seconds=0.1)
    sweeper.register(live.work, live.deliver)
    state = await wait_until_done(live.work, cid, sid)

    sent = fake_twilio.messages_to(number)
    assert [m.body for m in sent] == [p.body for p in PARTS]  # each part once, in order
    assert state["outcome"] == f'{{"sids": ["{sent[0].sid}", "{sent[1].sid}"]}}'
    assert state["attempt"] == "2" and state["owner"] == live.work.owner
    # The index is left just after the item is done; the gauge follows at the next sweep.
    await settled(lambda: _is(live.work.depth(), 0))
    await settled(lambda: _is(outbox_depth(), 0))


async def test_a_reply_twilio_cannot_take_stays_in_the_outbox_until_it_can(
    twilio_settings: Settings, fake_twilio: FakeTwilio
) -> None:
    """Twilio unreachable: the reply is kept (not dropped, not marked sent) and retried by the
    sweeper after its lease, reconciling first; sent once when Twilio is back."""
    number, cid = await _customer()
    sid = new_sid()
    unreachable = dataclasses.replace(
        twilio_settings, twilio_api_base_url=f"http://127.0.0.1:{free_port()}"
    )
    current = [unreachable]
    outbox = SmsOutbox(
        twilio_settings.redis_url,
        lambda: SmsSender(current[0], backoff_seconds=0.01, reconcile_delay_seconds=0),
        keep_seconds=600,
        lease_seconds=0.5,
    )
    lease = await outbox.post(cid, sid, PARTS[:1], number, OUR_NUMBER)
    assert outbox_depth() == 1  # set on change
    async with outbox.work.held(lease):
        await outbox.deliver(lease)
    assert (await outbox.work.state(cid, sid))["state"] == "running"

    sweeper = Takeover(interval_seconds=0.1)
    sweeper.register(outbox.work, outbox.deliver)
    deadline = time.monotonic() + 30
    while int((state := await outbox.work.state(cid, sid))["attempt"]) < 2:
        assert time.monotonic() < deadline, "not taken over"
        await asyncio.sleep(0.05)
    assert state["state"] == "running"  # taken over and tried again, still unreachable
    current[0] = twilio_settings  # Twilio is back
    state = await wait_until_done(outbox.work, cid, sid)
    [sent] = fake_twilio.messages_to(number)
    assert state["outcome"] == f'{{"sids": ["{sent.sid}"]}}'


async def test_a_reply_undeliverable_past_the_give_up_time_is_recorded_failed(
    twilio_settings: Settings, fake_twilio: FakeTwilio
) -> None:
    number, cid = await _customer()
    sid = new_sid()
    unreachable = dataclasses.replace(
        twilio_settings, twilio_api_base_url=f"http://127.0.0.1:{free_port()}"
    )
    outbox = SmsOutbox(
        twilio_settings.redis_url,
        lambda: SmsSender(unreachable, backoff_seconds=0.01),
        keep_seconds=600,
        give_up_seconds=0,
    )
    lease = await outbox.post(cid, sid, PARTS[:1], number, OUR_NUMBER)
    await outbox.deliver(lease)
    state = await outbox.work.state(cid, sid)
    assert state["state"] == "done" and "unreachable" in state["outcome"]
    assert fake_twilio.messages_to(number) == []


# ---------------------------------------------------------------------------------------------
# Drain: what a replica cannot finish by the drain's bound is handed off
# ---------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _sanic_test_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Sanic, "test_mode", True)


async def test_a_draining_replica_hands_off_the_turn_it_cannot_finish(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = channel_env(monkeypatch, REDIS_URL=redis_url)
    channel = TwilioSmsInput.from_credentials({"inline_budget_seconds": 1})
    app = Sanic(f"drain_{secrets.token_hex(4)}")
    app.ctx.agent = AgentWithoutLocks(slow=True, seconds=60)  # a turn that outlives the drain
    app.blueprint(channel.blueprint(None), url_prefix="/webhooks/twilio_sms")
    port = free_port()
    server = await serve_app(app, port)
    await server.before_start()  # the channel joins the drain
    await server.after_start()  # and its sweeper starts
    number = new_phone_number()
    sms = signed_sms(env, number, "where is my order")
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            answer = await client.post(sms.path, data=sms.form, headers=sms.headers)
        assert replies(answer) == []  # acknowledged at the budget; the turn runs on
        cid = await IdentityStore().lookup(phone_address(number))
        drain = drain_of(app)
        drain.seconds = 2.0
        started = time.monotonic()
        await drain.run()
        # At its bound, not after the 60 s turn (a loaded machine may add seconds).
        assert time.monotonic() - started < drain.seconds + 8
    finally:
        server.close()
        await server.wait_closed()
    state = await channel.turns.durable.state(cid, sms.form["MessageSid"])
    assert (state["state"], state["lease_until"]) == ("running", "0")  # handed off
    other = InFlightWork(redis_url, SMS_TURN, owner="another-replica")
    assert (cid, sms.form["MessageSid"]) in await other.expired()
    taken = await other.take_over(cid, sms.form["MessageSid"])
    assert taken is not None and taken.attempt == 2
    assert taken.payload["text"] == "where is my order" and taken.payload["reply_to"] == number


# ---------------------------------------------------------------------------------------------
# Turns left by a dead replica, taken over by the shared stack's sweeper
# ---------------------------------------------------------------------------------------------


async def record_as_dead_replica(stack: RasaStack, number: str, body: str) -> Dict[str, str]:
    """What a replica does before acknowledging a delivery, with the channel's own code: the
    ``sms_turn`` item, leased for 0.3 s to an owner that then stops."""
    channel = TwilioSmsInput(stack_settings(stack))
    form = sms_form(stack.env, number, body)
    inbound = InboundSms.parse(form, channel.region)
    identity = channel._identity()
    cid = await identity.resolve_conversation(inbound.address, channel=SMS)
    payload = await channel._turn_payload(inbound, cid, identity)
    dead = InFlightWork(channel.settings.redis_url, SMS_TURN, lease_seconds=0.3, owner=dead_owner())
    assert await dead.record(cid, inbound.message_sid, payload)
    return {"cid": cid, "sid": inbound.message_sid, **form}


@pytest.mark.rasa_server
async def test_a_turn_a_dead_replica_accepted_is_run_and_texted_by_another(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    recorded = await record_as_dead_replica(rasa_stack, number, "what's your refund policy")
    [sent] = await asyncio.to_thread(fake_twilio.wait_for_messages, number, 1, 30)
    assert sent.body.startswith("Here's our refund policy.")
    assert sent.from_ == rasa_stack.env["TWILIO_PHONE_NUMBER"]
    cid, sid = recorded["cid"], recorded["sid"]
    events = await asyncio.to_thread(user_events, rasa_stack, cid)
    assert [e["message_id"] for e in events] == [sid]
    turns = InFlightWork(stack_redis.url, SMS_TURN)
    outbox = InFlightWork(stack_redis.url, SMS_OUTBOX)
    turn = await wait_until_done(turns, cid, sid)
    assert turn["attempt"] == "2" and '"by_rest": true' in turn["outcome"]
    reply = await wait_until_done(outbox, cid, sid)
    assert reply["outcome"] == f'{{"sids": ["{sent.sid}"]}}'

    # Twilio's redelivery of that message, after all this: no second turn, no second reply.
    params = {k: v for k, v in recorded.items() if k not in ("cid", "sid")}
    assert replies(await asyncio.to_thread(post_signed, rasa_stack, params)) == []
    await asyncio.sleep(1.5)
    assert len(fake_twilio.messages_to(number)) == 1
    assert len(await asyncio.to_thread(user_events, rasa_stack, cid)) == 1


@pytest.mark.rasa_server
async def test_a_turn_a_dead_replica_processed_but_never_answered_is_answered_from_the_log(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio
) -> None:
    """The dead replica ran the turn (its events are in the log) and died before replying: the
    taker does not run it again; it texts what the dead replica's turn said."""
    number = new_phone_number()
    marker = f"Said before dying #{secrets.token_hex(3)}."
    form = sms_form(rasa_stack.env, number, "hello")
    sid = form["MessageSid"]
    channel = TwilioSmsInput(stack_settings(rasa_stack))
    cid = await channel._identity().resolve_conversation(phone_address(number), channel=SMS)
    processed: List[dict] = [
        {"event": "action", "name": "action_listen"},
        {
            "event": "user",
            "text": "hello",
            "message_id": sid,
            "parse_data": {"intent": {"name": "greet", "confidence": 1.0}, "entities": []},
            "input_channel": "twilio_sms",
        },
        {"event": "bot", "text": marker},
        {"event": "action", "name": "action_listen"},
    ]
    answer = await asyncio.to_thread(
        httpx.post,
        f"{rasa_stack.base_url}/conversations/{cid}/tracker/events",
        params={"token": rasa_stack.env["RASA_AUTH_TOKEN"]},
        json=processed,
        timeout=30,
    )
    answer.raise_for_status()
    inbound = InboundSms.parse(form, channel.region)
    payload = await channel._turn_payload(inbound, cid, channel._identity())
    dead = InFlightWork(channel.settings.redis_url, SMS_TURN, lease_seconds=0.3, owner=dead_owner())
    assert await dead.record(cid, sid, payload)

    [sent] = await asyncio.to_thread(fake_twilio.wait_for_messages, number, 1, 30)
    assert sent.body == marker
    events = await asyncio.to_thread(user_events, rasa_stack, cid)
    assert [e["message_id"] for e in events] == [sid]  # not run a second time
    await wait_until_done(InFlightWork(channel.settings.redis_url, SMS_TURN), cid, sid)


@pytest.mark.rasa_server
def test_a_replica_killed_mid_turn_leaves_the_reply_to_another(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, fake_llm: FakeLlm, stack_redis: RedisServer
) -> None:
    """SIGKILL a replica after it acknowledged a slow turn: the other replica's sweeper runs the
    turn again (the killed one never saved it) and texts the reply, once."""
    replica = rasa_stack.replica()
    try:
        number = new_phone_number()
        fake_llm.reset()
        fake_llm.script(
            LlmReply(content="Killed before this was said.", delay=30),
            LlmReply(content="Our stores open at 9am every day."),
        )
        params = sms_form(rasa_stack.env, number, GIBBERISH)
        answer = post_signed(rasa_stack, params, base_url=replica.base_url)
        assert replies(answer) == []  # acknowledged at the inline budget
        replica.rasa_proc.kill()
        replica.rasa_proc.wait(10)
        killed_at = time.time()
        [sent] = fake_twilio.wait_for_messages(number, 1, timeout=40)
        assert "Our stores open at 9am every day." in sent.body
        # Within the dead replica's lease (6 s), a sweep (1 s) and a turn on the live one
        # (10 s: a loaded machine).
        assert sent.received_at - killed_at < DEFAULT_LEASE_SECONDS + 1 + 10
        time.sleep(1.5)
        assert len(fake_twilio.messages_to(number)) == 1
        cid = conversation_of(stack_redis, number)
        assert [e["message_id"] for e in user_events(rasa_stack, cid)] == [params["MessageSid"]]
    finally:
        fake_llm.reset()
        replica.stop()
