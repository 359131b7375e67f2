"""SmsSender (omnichannel/sms_sender.py), the sending path every part uses, against the local fake
of Twilio's API and a real Redis (no Rasa)."""

from __future__ import annotations

import dataclasses
import secrets
import time

import pytest

from devtools.fake_twilio import FakeTwilio
from devtools.processes import free_port
from omnichannel.channels import SMS
from omnichannel.identity import IdentityStore, phone_address, user_address
from omnichannel.settings import Settings
from omnichannel.sms_sender import (
    STATUS_PATH,
    NoPhoneOnFile,
    SmsOptedOut,
    SmsSender,
    SmsSendFailed,
)
from tests.support import new_phone_number


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
    return await IdentityStore().resolve_conversation(phone_address(number), channel=SMS)


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
    assert sent.status_callback == "https://bot.example.com" + STATUS_PATH
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
