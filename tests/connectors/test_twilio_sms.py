"""The Twilio SMS connector through the really trained assistant, real Redis and real HTTP.

Webhooks are signed with twilio-python's RequestValidator exactly as Twilio signs them; replies
sent through the REST API land on the local fake of Twilio's API (`fake_twilio`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional

import httpx
import pytest
import redis
import redis.asyncio as aioredis
from multidict import MultiDict
from sanic import Sanic, response
from twilio.request_validator import RequestValidator

from connectors.twilio_sms import (
    APOLOGY,
    DeliveryLedger,
    InboundSms,
    Rejected,
    TwilioSmsInput,
    public_url,
    read_signed_form,
)
from devtools import sim_sms
from devtools.fake_llm import FakeLlm, LlmReply
from devtools.fake_twilio import FakeTwilio
from devtools.processes import RedisServer, free_port
from devtools.stack import RasaStack
from omnichannel.identity import IdentityStore, phone_address, user_address
from omnichannel.rendering.sms import is_gsm7
from omnichannel.settings import Settings
from omnichannel.sms_sender import NoPhoneOnFile, SmsOptedOut, SmsSender, SmsSendFailed
from tests.support import GIBBERISH, new_phone_number

WEBHOOK = "/webhooks/twilio_sms/webhook"
STATUS = "/webhooks/twilio_sms/status"


# ---------------------------------------------------------------------------------------------
# Helpers: numbers, Twilio's requests, reading state back
# ---------------------------------------------------------------------------------------------


def new_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


def inbound(stack: RasaStack, number: str, body: str, **extra: str) -> Dict[str, str]:
    """The form Twilio posts for an incoming SMS."""
    sid = new_sid()
    params = {
        "ToCountry": "US",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "SmsSid": sid,
        "SmsStatus": "received",
        "Body": body,
        "To": stack.env["TWILIO_PHONE_NUMBER"],
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": stack.env["TWILIO_ACCOUNT_SID"],
        "From": number,
        "FromCity": "",
        "ApiVersion": "2010-04-01",
    }
    params.update(extra)
    return params


def sign(token: str, url: str, params: Dict[str, str]) -> str:
    return RequestValidator(token).compute_signature(url, params)


def post_signed(
    stack: RasaStack,
    params: Dict[str, str],
    path: str = WEBHOOK,
    base_url: Optional[str] = None,
    headers: Optional[Dict[str, str]] = None,
    timeout: float = 30,
) -> httpx.Response:
    """POST as Twilio does: signed over PUBLIC_BASE_URL + path, sent to ``base_url``."""
    signature = sign(stack.env["TWILIO_AUTH_TOKEN"], stack.env["PUBLIC_BASE_URL"] + path, params)
    return httpx.post(
        (base_url or stack.base_url) + path,
        data=params,
        headers={"X-Twilio-Signature": signature, **(headers or {})},
        timeout=timeout,
    )


def replies(answer: httpx.Response) -> List[str]:
    """The <Message> bodies of a TwiML answer."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/xml")
    root = ElementTree.fromstring(answer.text)
    assert root.tag == "Response"
    return [(m.text or "") for m in root.findall("Message")]


def media_of(answer: httpx.Response) -> List[List[str]]:
    root = ElementTree.fromstring(answer.text)
    return [[media.text for media in m.findall("Media")] for m in root.findall("Message")]


def text_sms(stack: RasaStack, number: str, body: str, **extra: str) -> List[str]:
    return replies(post_signed(stack, inbound(stack, number, body, **extra)))


def conversation_of(stack_redis: RedisServer, number: str) -> Optional[str]:
    with redis.Redis.from_url(stack_redis.url) as client:
        value = client.get(phone_address(number).index_key)
    return value.decode() if value else None


def tracker(stack: RasaStack, conversation_id: str) -> dict:
    answer = httpx.get(
        f"{stack.base_url}/conversations/{conversation_id}/tracker",
        params={"token": stack.env["RASA_AUTH_TOKEN"]},
        timeout=30,
    )
    answer.raise_for_status()
    return answer.json()


def user_events(stack: RasaStack, conversation_id: str) -> List[dict]:
    return [e for e in tracker(stack, conversation_id)["events"] if e["event"] == "user"]


def profile(stack_redis: RedisServer, conversation_id: str):
    async def read():
        client = aioredis.Redis.from_url(stack_redis.url)
        try:
            return await IdentityStore(client).profile(conversation_id)
        finally:
            await client.close()

    return asyncio.run(read())


def ledger_has(stack_redis: RedisServer, message_sid: str) -> bool:
    with redis.Redis.from_url(stack_redis.url) as client:
        return bool(client.exists(DeliveryLedger.message_key(message_sid)))


def stack_settings(stack: RasaStack, **overrides: str) -> Settings:
    return Settings.from_env({**stack.env, **overrides})


# ---------------------------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------------------------


@pytest.mark.rasa_server
def test_signed_request_is_answered_and_forged_or_unsigned_ones_are_refused(
    rasa_stack: RasaStack, stack_redis: RedisServer
) -> None:
    signed = new_phone_number()
    assert text_sms(rasa_stack, signed, "hello") == [
        "Hi! Acme Shop here. Ask me about an order, tracking or refunds.\n"
        "Reply 1 for Order status, 2 for Refund policy."
    ]
    assert conversation_of(stack_redis, signed) is not None

    url = rasa_stack.base_url + WEBHOOK
    public = rasa_stack.env["PUBLIC_BASE_URL"] + WEBHOOK
    forged_number, unsigned_number, tampered_number = (
        new_phone_number(),
        new_phone_number(),
        new_phone_number(),
    )

    forged = inbound(rasa_stack, forged_number, "hello")
    wrong_key = sign(secrets.token_hex(16), public, forged)
    answer = httpx.post(url, data=forged, headers={"X-Twilio-Signature": wrong_key}, timeout=10)
    assert (answer.status_code, answer.text) == (403, "invalid X-Twilio-Signature")

    unsigned = inbound(rasa_stack, unsigned_number, "hello")
    answer = httpx.post(url, data=unsigned, timeout=10)
    assert (answer.status_code, answer.text) == (403, "missing X-Twilio-Signature")

    original = inbound(rasa_stack, signed, "hello")
    signature = sign(rasa_stack.env["TWILIO_AUTH_TOKEN"], public, original)
    tampered = {**original, "From": tampered_number, "Body": "refund order 12345"}
    answer = httpx.post(url, data=tampered, headers={"X-Twilio-Signature": signature}, timeout=10)
    assert answer.status_code == 403

    for params in (forged, unsigned, tampered):
        assert not ledger_has(stack_redis, params["MessageSid"])
    for number in (forged_number, unsigned_number, tampered_number):
        assert conversation_of(stack_redis, number) is None


@pytest.mark.rasa_server
def test_forwarded_headers_are_ignored_unless_the_proxy_is_trusted(
    rasa_stack: RasaStack, stack_redis: RedisServer
) -> None:
    """The shared stack does not trust proxies: a request signed for the URL that
    X-Forwarded-* claim is refused, so a client cannot choose the URL it is checked against."""
    number = new_phone_number()
    params = inbound(rasa_stack, number, "hello")
    claimed = "https://attacker.example" + WEBHOOK
    answer = httpx.post(
        rasa_stack.base_url + WEBHOOK,
        data=params,
        headers={
            "X-Twilio-Signature": sign(rasa_stack.env["TWILIO_AUTH_TOKEN"], claimed, params),
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "attacker.example",
        },
        timeout=10,
    )
    assert answer.status_code == 403
    assert conversation_of(stack_redis, number) is None


def test_num_media_must_be_plain_digits() -> None:
    """ "²" passes str.isdigit() but int() refuses it: a 400, not a 500."""
    form = MultiDict(
        MessageSid=new_sid(), From="+14155552671", Body="hi", NumMedia="\u00b2", To="+15005550006"
    )
    with pytest.raises(Rejected) as refused:
        InboundSms.parse(form)
    assert refused.value.status == 400 and "NumMedia must be" in refused.value.reason


def test_public_url_reconstruction() -> None:
    headers = {"x-forwarded-proto": "https", "x-forwarded-host": "bot.example.com", "host": "a:1"}
    base = "https://public.example.org"
    assert public_url(WEBHOOK, "", headers, base, False) == base + WEBHOOK
    assert public_url(WEBHOOK, "a=1", headers, base + "/", False) == base + WEBHOOK + "?a=1"
    assert public_url(WEBHOOK, "", headers, base, True) == "https://bot.example.com" + WEBHOOK
    chained = {"x-forwarded-proto": "https, http", "x-forwarded-host": "bot.example.com, internal"}
    assert public_url(WEBHOOK, "", chained, base, True) == "https://bot.example.com" + WEBHOOK
    only_proto = {"x-forwarded-proto": "https", "host": "tunnel.example:8443"}
    assert (
        public_url(WEBHOOK, "", only_proto, base, True) == "https://tunnel.example:8443" + WEBHOOK
    )
    untrusted_values = [
        {"x-forwarded-proto": "gopher", "host": "x"},
        {"x-forwarded-proto": "https", "x-forwarded-host": "a/b@c"},
    ]
    for bad in untrusted_values:
        assert public_url(WEBHOOK, "", bad, base, True) == base + WEBHOOK


@pytest.fixture(autouse=True)
def _sanic_test_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unit-level apps below are served in this process; Sanic's start-up rewrite of its own
    methods can then run more than once only in test mode."""
    monkeypatch.setattr(Sanic, "test_mode", True)


async def _serve(app: Sanic, port: int):
    server = await app.create_server(
        host="127.0.0.1", port=port, return_asyncio_server=True, access_log=False
    )
    await server.startup()
    await server.start_serving()
    return server


async def test_behind_a_trusted_proxy_the_forwarded_url_is_checked() -> None:
    """A unit-level Sanic app (the shared stack trusts no proxy) serving read_signed_form."""
    token = secrets.token_hex(16)
    settings = Settings.from_env(
        {
            "PUBLIC_BASE_URL": "https://configured.example",
            "TWILIO_AUTH_TOKEN": token,
            "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
            "TRUST_PROXY_HEADERS": "true",
        }
    )
    app = Sanic(f"proxy_{secrets.token_hex(4)}")

    @app.post(WEBHOOK)
    async def webhook(request):
        try:
            form = read_signed_form(request, settings)
        except Rejected as rejection:
            return response.text(rejection.reason, status=rejection.status)
        return response.text(form["Body"])

    port = free_port()
    server = await _serve(app, port)
    try:
        params = {"Body": "hi", "From": "+14155552671", "MessageSid": new_sid()}
        tunnel = "https://abc123.tunnel.example" + WEBHOOK
        headers = {
            "X-Twilio-Signature": sign(token, tunnel, params),
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "abc123.tunnel.example",
        }
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            ok = await client.post(WEBHOOK, data=params, headers=headers)
            assert (ok.status_code, ok.text) == (200, "hi")
            # signed for the configured URL but forwarded from elsewhere: refused
            headers["X-Twilio-Signature"] = sign(
                token, "https://configured.example" + WEBHOOK, params
            )
            refused = await client.post(WEBHOOK, data=params, headers=headers)
            assert refused.status_code == 403
            # the same signature without forwarded headers: the configured URL, accepted
            plain = await client.post(
                WEBHOOK, data=params, headers={"X-Twilio-Signature": headers["X-Twilio-Signature"]}
            )
            assert plain.status_code == 200
    finally:
        server.close()
        await server.wait_closed()


async def test_redis_down_gets_a_texted_apology(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Redis: the delivery cannot be recorded, so the texter is told, not silently dropped."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    token = secrets.token_hex(16)
    env = {
        "PUBLIC_BASE_URL": "http://127.0.0.1:1",
        "TWILIO_AUTH_TOKEN": token,
        "TWILIO_ACCOUNT_SID": "AC" + "1" * 32,
        "TWILIO_PHONE_NUMBER": "+15005550006",
        "REDIS_URL": dead,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    channel = TwilioSmsInput.from_credentials({"inline_budget_seconds": 2})
    app = Sanic(f"redis_down_{secrets.token_hex(4)}")

    async def never_called(message):  # the turn must not start without its state
        raise AssertionError("a turn ran without Redis")

    app.blueprint(channel.blueprint(never_called), url_prefix="/webhooks/twilio_sms")
    port = free_port()
    server = await _serve(app, port)
    try:
        params = {
            "MessageSid": new_sid(),
            "AccountSid": env["TWILIO_ACCOUNT_SID"],
            "From": new_phone_number(),
            "To": "+15005550006",
            "Body": "where is my order",
            "NumMedia": "0",
        }
        signature = sign(token, env["PUBLIC_BASE_URL"] + WEBHOOK, params)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            answer = await client.post(
                WEBHOOK, data=params, headers={"X-Twilio-Signature": signature}
            )
    finally:
        server.close()
        await server.wait_closed()
    assert replies(answer) == [APOLOGY]


# ---------------------------------------------------------------------------------------------
# Idempotency
# ---------------------------------------------------------------------------------------------


@pytest.mark.rasa_server
def test_duplicate_delivery_on_two_replicas_is_one_turn(
    rasa_stack: RasaStack, rasa_replica: RasaStack, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    params = inbound(rasa_stack, number, "what's your refund policy")
    token = {"I-Twilio-Idempotency-Token": secrets.token_hex(16)}
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(
                lambda base: post_signed(rasa_stack, params, base_url=base, headers=token),
                (rasa_stack.base_url, rasa_replica.base_url),
            )
        )
    bodies = sorted((replies(a) for a in answers), key=len)
    # one replica ran the turn and answered it; the other got an empty TwiML (still running)
    # or the same answer (already finished), never a second turn
    assert bodies[1] and bodies[1][0].startswith("Here's our refund policy.")
    assert bodies[0] in ([], bodies[1])

    # a later redelivery (Twilio's retry) gets the stored answer, from either replica
    again = post_signed(rasa_stack, params, base_url=rasa_replica.base_url, headers=token)
    assert replies(again) == bodies[1]
    # a delivery carrying a seen idempotency token is recognised by the token alone
    retried = {**params, "MessageSid": new_sid()}
    assert replies(post_signed(rasa_stack, retried, headers=token)) == bodies[1]

    cid = conversation_of(stack_redis, number)
    events = user_events(rasa_stack, cid)
    assert [e["message_id"] for e in events] == [params["MessageSid"]]


# ---------------------------------------------------------------------------------------------
# Slow turns: acknowledged within the budget, answered by REST
# ---------------------------------------------------------------------------------------------


@pytest.mark.rasa_server
def test_slow_turn_is_acknowledged_in_budget_and_answered_by_rest(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, fake_llm: FakeLlm, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    fake_llm.reset()
    fake_llm.script(LlmReply(content="Our stores open at 9am every day.", delay=6))
    started = time.monotonic()
    answer = post_signed(rasa_stack, inbound(rasa_stack, number, GIBBERISH))
    acknowledged = time.monotonic() - started
    assert replies(answer) == []
    assert acknowledged < 5.8  # the 5 s inline budget, well before the 6 s turn ends

    [sent] = fake_twilio.wait_for_messages(number, 1, timeout=30)
    assert "Our stores open at 9am every day." in sent.body
    assert sent.from_ == rasa_stack.env["TWILIO_PHONE_NUMBER"]
    assert sent.status_callback == rasa_stack.env["PUBLIC_BASE_URL"] + STATUS
    assert time.monotonic() - started >= 6
    cid = conversation_of(stack_redis, number)
    assert [e["text"] for e in user_events(rasa_stack, cid)] == [GIBBERISH]
    fake_llm.reset()


# ---------------------------------------------------------------------------------------------
# Rendering through the stack
# ---------------------------------------------------------------------------------------------


@pytest.mark.rasa_server
def test_buttons_round_trip_by_number_and_by_title(
    rasa_stack: RasaStack, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    [greeting] = text_sms(rasa_stack, number, "hi")
    assert greeting.endswith("Reply 1 for Order status, 2 for Refund policy.")
    [asked] = text_sms(rasa_stack, number, "1")
    assert "order number" in asked
    # the chat history shows the chosen option, not its payload
    chosen = user_events(rasa_stack, conversation_of(stack_redis, number))[-1]
    assert chosen["text"] == "/check_order_status"
    assert chosen["metadata"]["button_title"] == "Order status"

    other = new_phone_number()
    text_sms(rasa_stack, other, "hello")
    [policy] = text_sms(rasa_stack, other, "Refund policy")
    assert policy.startswith("Here's our refund policy.")
    # the options were answered: "2" now is just "2", not the refund policy again
    cid = conversation_of(stack_redis, other)
    texts = [e["text"] for e in user_events(rasa_stack, cid)]
    assert texts == ["hello", "/ask_refund_policy"]
    text_sms(rasa_stack, other, "2")
    assert [e["text"] for e in user_events(rasa_stack, cid)][-1] == "2"


@pytest.mark.rasa_server
def test_long_reply_is_one_gsm7_message(rasa_stack: RasaStack) -> None:
    [policy] = text_sms(rasa_stack, new_phone_number(), "what's your refund policy")
    assert 320 < len(policy) <= 1600
    assert is_gsm7(policy)


# ---------------------------------------------------------------------------------------------
# Opt-out, HELP
# ---------------------------------------------------------------------------------------------


@pytest.mark.rasa_server
async def test_stop_blocks_every_later_sms_and_start_resubscribes(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    assert await asyncio.to_thread(text_sms, rasa_stack, number, "where is my order")
    cid = conversation_of(stack_redis, number)
    client = aioredis.Redis.from_url(stack_redis.url)
    sender = SmsSender(
        stack_settings(rasa_stack, TWILIO_API_BASE_URL=fake_twilio.url),
        identity=IdentityStore(client),
    )
    try:
        assert await asyncio.to_thread(text_sms, rasa_stack, number, "Stop") == []
        assert (await IdentityStore(client).profile(cid)).sms_opted_out
        with pytest.raises(SmsOptedOut):
            await sender.send(cid, "Your tracking link: https://t.example/1")
        # an opted-out number's messages are not answered, by TwiML or by REST
        assert await asyncio.to_thread(text_sms, rasa_stack, number, "12345") == []
        assert fake_twilio.messages_to(number) == []

        assert await asyncio.to_thread(text_sms, rasa_stack, number, "START") == []
        assert not (await IdentityStore(client).profile(cid)).sms_opted_out
        [sid] = await sender.send(cid, "Your tracking link: https://t.example/1")
        [sent] = fake_twilio.messages_to(number)
        assert (sent.sid, sent.body) == (sid, "Your tracking link: https://t.example/1")
    finally:
        await client.close()


@pytest.mark.rasa_server
def test_opt_out_type_from_advanced_opt_out_is_honoured(
    rasa_stack: RasaStack, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    assert text_sms(rasa_stack, number, "arrêtez", OptOutType="STOP") == []
    assert profile(stack_redis, conversation_of(stack_redis, number)).sms_opted_out


@pytest.mark.rasa_server
def test_help_gets_the_designers_help_response(rasa_stack: RasaStack) -> None:
    assert text_sms(rasa_stack, new_phone_number(), "HELP") == [
        "Acme Shop assistant: ask about an order status, tracking or refunds. "
        "Reply STOP to opt out of texts."
    ]


# ---------------------------------------------------------------------------------------------
# MMS
# ---------------------------------------------------------------------------------------------


@pytest.mark.rasa_server
def test_picture_without_text_makes_a_turn_with_its_media_in_metadata(
    rasa_stack: RasaStack, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    picture = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"
    params = inbound(
        rasa_stack, number, "", NumMedia="1", MediaUrl0=picture, MediaContentType0="image/jpeg"
    )
    params["MessageSid"] = params["SmsSid"] = params["SmsMessageSid"] = new_sid("MM")
    [answer] = replies(post_signed(rasa_stack, params))
    assert answer.startswith("Thanks for the picture!")

    [event] = user_events(rasa_stack, conversation_of(stack_redis, number))
    assert event["parse_data"]["intent"]["name"] == "send_picture"
    assert event["metadata"]["media"] == [{"url": picture, "content_type": "image/jpeg"}]
    assert event["metadata"]["channel"] == "sms"
    assert event["metadata"]["message_sid"] == params["MessageSid"]


# ---------------------------------------------------------------------------------------------
# Status callbacks
# ---------------------------------------------------------------------------------------------


def status_params(stack: RasaStack, number: str, status: str, error: str = "") -> Dict[str, str]:
    sid = new_sid()
    params = {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": stack.env["TWILIO_ACCOUNT_SID"],
        "From": stack.env["TWILIO_PHONE_NUMBER"],
        "To": number,
        "ApiVersion": "2010-04-01",
    }
    if error:
        params["ErrorCode"] = error
    return params


@pytest.mark.rasa_server
def test_status_callbacks_record_failures_and_21610_opts_out(
    rasa_stack: RasaStack, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    text_sms(rasa_stack, number, "hello")
    cid = conversation_of(stack_redis, number)

    delivered = status_params(rasa_stack, number, "delivered")
    assert post_signed(rasa_stack, delivered, path=STATUS).status_code == 204
    assert profile(stack_redis, cid).sms_failures == []

    unsigned = status_params(rasa_stack, number, "failed", "30003")
    assert httpx.post(rasa_stack.base_url + STATUS, data=unsigned, timeout=10).status_code == 403
    assert profile(stack_redis, cid).sms_failures == []

    undelivered = status_params(rasa_stack, number, "undelivered", "30003")
    assert post_signed(rasa_stack, undelivered, path=STATUS).status_code == 204
    [failure] = profile(stack_redis, cid).sms_failures
    assert (failure["sid"], failure["status"], failure["error_code"]) == (
        undelivered["MessageSid"],
        "undelivered",
        "30003",
    )
    assert not profile(stack_redis, cid).sms_opted_out

    unsubscribed = status_params(rasa_stack, number, "failed", "21610")
    assert post_signed(rasa_stack, unsubscribed, path=STATUS).status_code == 204
    after = profile(stack_redis, cid)
    assert [f["error_code"] for f in after.sms_failures] == ["30003", "21610"]
    assert after.sms_opted_out
    assert number not in rasa_stack.rasa_log()  # logged masked


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def _without(*names: str):
    return lambda p: {k: v for k, v in p.items() if k not in names}


BAD_INPUT = [
    ("no From", _without("From"), 400, "From missing"),
    ("From not a number", lambda p: {**p, "From": "not-a-number"}, 400, "From: not a phone"),
    ("From too short", lambda p: {**p, "From": "+1415555"}, 400, "From: not a valid phone"),
    ("From too long", lambda p: {**p, "From": "+1" + "4" * 80}, 413, "From longer than"),
    ("no Body", _without("Body"), 400, "Body missing"),
    ("Body oversized", lambda p: {**p, "Body": "x" * 5000}, 413, "Body longer than"),
    ("Body with NUL", lambda p: {**p, "Body": "hi\x00there"}, 400, "control characters"),
    ("no MessageSid", _without("MessageSid", "SmsSid", "SmsMessageSid"), 400, "MessageSid missing"),
    ("garbage MessageSid", lambda p: {**p, "MessageSid": "SM'; DROP"}, 400, "not a Twilio SID"),
    ("NumMedia not a number", lambda p: {**p, "NumMedia": "lots"}, 400, "NumMedia must be"),
    ("NumMedia too many", lambda p: {**p, "NumMedia": "11"}, 400, "NumMedia must be"),
    ("MediaUrl missing", lambda p: {**p, "NumMedia": "1"}, 400, "MediaUrl0 missing"),
    (
        "MediaUrl not http",
        lambda p: {**p, "NumMedia": "1", "MediaUrl0": "javascript:alert(1)"},
        400,
        "MediaUrl0 missing or not an http(s) URL",
    ),
    (
        "other account",
        lambda p: {**p, "AccountSid": "AC" + "f" * 32},
        403,
        "another Twilio account",
    ),
]


@pytest.mark.rasa_server
@pytest.mark.parametrize(
    ("case", "mutate", "status", "reason"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT]
)
def test_bad_input_is_refused_without_writing_anything(
    rasa_stack: RasaStack, stack_redis: RedisServer, case, mutate, status: int, reason: str
) -> None:
    number = new_phone_number()
    params = mutate(inbound(rasa_stack, number, "where is my order"))
    answer = post_signed(rasa_stack, params)
    assert answer.status_code == status, answer.text
    assert reason in answer.text
    assert conversation_of(stack_redis, number) is None
    if "MessageSid" in params:
        assert not ledger_has(stack_redis, params["MessageSid"])


@pytest.mark.rasa_server
def test_malformed_requests_never_500(rasa_stack: RasaStack, stack_redis: RedisServer) -> None:
    url = rasa_stack.base_url + WEBHOOK
    json_body = httpx.post(url, json={"From": new_phone_number(), "Body": "hi"}, timeout=10)
    assert json_body.status_code == 415
    huge = httpx.post(
        url,
        content=b"Body=" + b"x" * 70_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert huge.status_code == 413
    broken = httpx.post(
        url,
        content=b"Body=\xff\xfe&From=%2B14155552671",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": "x",
        },
        timeout=10,
    )
    assert broken.status_code == 400

    number = new_phone_number()
    blank = inbound(rasa_stack, number, "   ")
    assert replies(post_signed(rasa_stack, blank)) == []
    assert conversation_of(stack_redis, number) is None


# ---------------------------------------------------------------------------------------------
# One conversation across channels
# ---------------------------------------------------------------------------------------------


@pytest.mark.rasa_server
def test_sms_conversation_continues_on_another_channel(
    rasa_stack: RasaStack, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    [asked] = text_sms(rasa_stack, number, "where is my order")
    assert "order number" in asked
    [status] = text_sms(rasa_stack, number, "it's 12345")
    assert "12345" in status and "shipped" in status

    cid = conversation_of(stack_redis, number)
    assert cid.startswith("c_") and number not in cid
    later = httpx.post(
        f"{rasa_stack.base_url}/webhooks/rest/webhook",
        json={
            "sender": cid,
            "message": "what's the tracking number",
            "metadata": {"channel": "voice"},
        },
        timeout=30,
    )
    later.raise_for_status()
    [reply] = [m.get("text", "") for m in later.json()]
    assert "1Z999AA10123456784" in reply  # the order number was not asked again
    state = tracker(rasa_stack, cid)
    assert state["slots"]["order_number"] == "12345"
    assert state["slots"]["channel"] == "voice"
    assert [e["input_channel"] for e in user_events(rasa_stack, cid)] == [
        "twilio_sms",
        "twilio_sms",
        "rest",
    ]


# ---------------------------------------------------------------------------------------------
# SmsSender: the sending path other parts use
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def sender_env(redis_url: str, fake_twilio: FakeTwilio) -> Settings:
    fake_twilio.opted_out.clear()
    return Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "PUBLIC_BASE_URL": "https://bot.example.com",
            "TWILIO_ACCOUNT_SID": fake_twilio.account_sid,
            "TWILIO_AUTH_TOKEN": fake_twilio.auth_token,
            "TWILIO_PHONE_NUMBER": "+15005550006",
            "TWILIO_API_BASE_URL": fake_twilio.url,
        }
    )


async def _phone_conversation(number: str) -> str:
    return await IdentityStore().resolve_conversation(phone_address(number), channel="sms")


async def test_sender_sends_with_status_callback(
    sender_env: Settings, fake_twilio: FakeTwilio
) -> None:
    number = new_phone_number()
    cid = await _phone_conversation(number)
    sids = await SmsSender(sender_env).send(
        cid, "Hi “there”", media_urls=["https://i.example/a.png"]
    )
    [sent] = fake_twilio.messages_to(number)
    assert sids == [sent.sid]
    assert sent.body == 'Hi "there"'
    assert sent.media_urls == ["https://i.example/a.png"]
    assert sent.status_callback == "https://bot.example.com" + STATUS
    assert sent.from_ == "+15005550006"


async def test_sender_never_retries_a_send_that_may_have_reached_twilio(
    sender_env: Settings, fake_twilio: FakeTwilio
) -> None:
    number = new_phone_number()
    cid = await _phone_conversation(number)
    fake_twilio.fail_next(500)
    with pytest.raises(SmsSendFailed, match="not retried"):
        await SmsSender(sender_env, backoff_seconds=0.01).send(cid, "once")
    assert fake_twilio.messages_to(number) == []  # a retry would have gone through


async def test_sender_retries_what_twilio_provably_did_not_create(
    sender_env: Settings, fake_twilio: FakeTwilio
) -> None:
    number = new_phone_number()
    cid = await _phone_conversation(number)
    fake_twilio.fail_next(429, count=2)
    await SmsSender(sender_env, backoff_seconds=0.01).send(cid, "after the rate limit")
    assert [m.body for m in fake_twilio.messages_to(number)] == ["after the rate limit"]

    closed = dataclasses.replace(sender_env, twilio_api_base_url=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(SmsSendFailed, match="unreachable after 3 attempts"):
        await SmsSender(closed, backoff_seconds=0.05).send(cid, "nobody listening")
    assert time.monotonic() - started >= 0.15  # backed off between attempts


async def test_sender_refuses_without_phone_or_after_opt_out(
    sender_env: Settings, fake_twilio: FakeTwilio
) -> None:
    chat_only = await IdentityStore().resolve_conversation(
        user_address("u-" + secrets.token_hex(4))
    )
    with pytest.raises(NoPhoneOnFile):
        await SmsSender(sender_env).send(chat_only, "hello")

    number = new_phone_number()
    cid = await _phone_conversation(number)
    fake_twilio.opted_out.add(number)  # unsubscribed at Twilio, not yet known to us
    with pytest.raises(SmsOptedOut):
        await SmsSender(sender_env).send(cid, "hello")
    assert (await IdentityStore().profile(cid)).sms_opted_out
    fake_twilio.opted_out.discard(number)
    with pytest.raises(SmsOptedOut):  # refused by us now, before asking Twilio
        await SmsSender(sender_env).send(cid, "hello")
    assert fake_twilio.messages_to(number) == []


def test_required_variables_stop_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from omnichannel.settings import ConfigError

    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "2" * 32)
    with pytest.raises(ConfigError, match="TWILIO_AUTH_TOKEN"):
        TwilioSmsInput.from_credentials({})
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "t")
    monkeypatch.delenv("TWILIO_PHONE_NUMBER", raising=False)
    monkeypatch.delenv("TWILIO_MESSAGING_SERVICE_SID", raising=False)
    with pytest.raises(ConfigError, match="TWILIO_PHONE_NUMBER"):
        TwilioSmsInput.from_credentials({})
    monkeypatch.setenv("TWILIO_PHONE_NUMBER", "+15005550006")
    with pytest.raises(ConfigError, match="inline_budget_seconds"):
        TwilioSmsInput.from_credentials({"inline_budget_seconds": 20})
    with pytest.raises(ConfigError, match="unknown"):
        TwilioSmsInput.from_credentials({"inline_budget": 3})
    assert json.dumps(TwilioSmsInput.from_credentials({}).config.inline_budget_seconds) == "5.0"


# ---------------------------------------------------------------------------------------------
# The simulator (devtools/sim_sms.py)
# ---------------------------------------------------------------------------------------------


@pytest.mark.rasa_server
def test_simulator_signs_like_twilio_and_shows_inline_and_rest_replies(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, fake_llm: FakeLlm
) -> None:
    env = {
        **os.environ,
        **{name: rasa_stack.env[name] for name in sim_sms.SETTINGS if name in rasa_stack.env},
        "TWILIO_API_BASE_URL": fake_twilio.url,
    }
    number = new_phone_number()
    fake_llm.reset()
    fake_llm.script(LlmReply(content="We ship worldwide.", delay=6))
    run = subprocess.run(
        [sys.executable, "-m", "devtools.sim_sms", "--from", number]
        + ["--server", rasa_stack.base_url, "hello", GIBBERISH],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    fake_llm.reset()
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert (
        lines[0] == "bot (TwiML) > Hi! Acme Shop here. Ask me about an order, tracking or refunds."
    )
    assert "Reply 1 for Order status, 2 for Refund policy." in lines[1]
    assert any(line.startswith("bot (REST)  > ") and "We ship worldwide." in line for line in lines)


@pytest.mark.rasa_server
async def test_failed_delivery_reported_by_twilio_reaches_the_profile(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, stack_redis: RedisServer
) -> None:
    """The fake reports delivery as Twilio does: signed status callbacks to our status URL."""
    number = new_phone_number()
    await asyncio.to_thread(text_sms, rasa_stack, number, "hello")
    cid = conversation_of(stack_redis, number)
    client = aioredis.Redis.from_url(stack_redis.url)
    sender = SmsSender(
        stack_settings(rasa_stack, TWILIO_API_BASE_URL=fake_twilio.url),
        identity=IdentityStore(client),
    )
    fake_twilio.fail_delivery(number, error_code="30005")
    fake_twilio.send_status_callbacks = True
    try:
        [sid] = await sender.send(cid, "Your refund is on its way.")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            reports = [a for a in fake_twilio.callback_answers if a[0] == sid]
            if len(reports) == 2:
                break
            await asyncio.sleep(0.1)
        assert reports == [(sid, "sent", 204), (sid, "undelivered", 204)]
        [failure] = (await IdentityStore(client).profile(cid)).sms_failures
        assert (failure["sid"], failure["status"], failure["error_code"]) == (
            sid,
            "undelivered",
            "30005",
        )
    finally:
        fake_twilio.send_status_callbacks = False
        await client.close()


@pytest.mark.rasa_server
def test_turns_outside_a_webhook_are_texted_by_rest(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, stack_redis: RedisServer
) -> None:
    """Rasa's API can run a turn with output_channel=twilio_sms (reminders, hand-backs)."""
    number = new_phone_number()
    text_sms(rasa_stack, number, "hello")
    cid = conversation_of(stack_redis, number)
    answer = httpx.post(
        f"{rasa_stack.base_url}/conversations/{cid}/trigger_intent",
        params={"token": rasa_stack.env["RASA_AUTH_TOKEN"], "output_channel": "twilio_sms"},
        json={"name": "help"},
        timeout=30,
    )
    answer.raise_for_status()
    [sent] = fake_twilio.wait_for_messages(number, 1, timeout=15)
    assert sent.body.startswith("Acme Shop assistant: ask about an order status")


@pytest.mark.rasa_server
def test_options_texted_outside_a_webhook_can_be_answered_by_number(
    rasa_stack: RasaStack, fake_twilio: FakeTwilio, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    text_sms(rasa_stack, number, "hello")
    text_sms(rasa_stack, number, "Refund policy")  # the greeting's options are answered
    cid = conversation_of(stack_redis, number)
    answer = httpx.post(
        f"{rasa_stack.base_url}/conversations/{cid}/trigger_intent",
        params={"token": rasa_stack.env["RASA_AUTH_TOKEN"], "output_channel": "twilio_sms"},
        json={"name": "greet"},
        timeout=30,
    )
    answer.raise_for_status()
    [sent] = fake_twilio.wait_for_messages(number, 1, timeout=15)
    assert sent.body.endswith("Reply 1 for Order status, 2 for Refund policy.")
    text_sms(rasa_stack, number, "1")
    assert user_events(rasa_stack, cid)[-1]["text"] == "/check_order_status"


@pytest.mark.parametrize("slow", [False, True], ids=["inline", "after the budget"])
async def test_a_failed_turn_is_answered_with_an_apology(
    slow: bool,
    redis_url: str,
    fake_twilio: FakeTwilio,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Rasa raising out of a turn (here LockError: the conversation's lock never came) is told
    to the texter, inline or by REST, and logged with the reason."""
    from rasa.core.lock_store import LockError
    from rasa.core.tracker_store import InMemoryTrackerStore
    from rasa.shared.core.domain import Domain

    env = {
        "PUBLIC_BASE_URL": "http://127.0.0.1:1",
        "TWILIO_AUTH_TOKEN": fake_twilio.auth_token,
        "TWILIO_ACCOUNT_SID": fake_twilio.account_sid,
        "TWILIO_PHONE_NUMBER": "+15005550006",
        "TWILIO_API_BASE_URL": fake_twilio.url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    channel = TwilioSmsInput.from_credentials({"inline_budget_seconds": 1})

    async def rasa_gives_up(message) -> None:
        if slow:
            await asyncio.sleep(1.5)
        raise LockError("could not acquire lock for the conversation")

    app = Sanic(f"turn_fails_{secrets.token_hex(4)}")
    app.ctx.agent = InMemoryTrackerStore(Domain.empty())
    app.blueprint(channel.blueprint(rasa_gives_up), url_prefix="/webhooks/twilio_sms")
    port = free_port()
    server = await _serve(app, port)
    number = new_phone_number()
    params = {
        "MessageSid": new_sid(),
        "AccountSid": env["TWILIO_ACCOUNT_SID"],
        "From": number,
        "To": "+15005550006",
        "Body": "where is my order",
        "NumMedia": "0",
    }
    signature = sign(env["TWILIO_AUTH_TOKEN"], env["PUBLIC_BASE_URL"] + WEBHOOK, params)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            answer = await client.post(
                WEBHOOK, data=params, headers={"X-Twilio-Signature": signature}
            )
        if slow:
            assert replies(answer) == []
            [sent] = await asyncio.to_thread(fake_twilio.wait_for_messages, number, 1, 10)
            assert sent.body == APOLOGY
        else:
            assert replies(answer) == [APOLOGY]
            assert fake_twilio.messages_to(number) == []
    finally:
        server.close()
        await server.wait_closed()
    assert "turn failed: conversation busy" in caplog.text
    assert number not in caplog.text


@pytest.mark.rasa_server
def test_whatsapp_sender_is_the_same_customer_as_the_phone_number(
    rasa_stack: RasaStack, stack_redis: RedisServer
) -> None:
    number = new_phone_number()
    [asked] = text_sms(rasa_stack, f"whatsapp:{number}", "where is my order")
    assert "order number" in asked
    [status] = text_sms(rasa_stack, number, "12345")  # the same person, by plain SMS
    assert "12345" in status
    cid = conversation_of(stack_redis, number)
    events = user_events(rasa_stack, cid)
    assert [e["text"] for e in events] == ["where is my order", "12345"]
    assert {e["metadata"]["address"] for e in events} == {f"tel:{number}"}
