"""SmsSender (omnichannel/sms_sender.py), the sending path every part uses, against the local fake
of Twilio's API and a real Redis (no Rasa); and the fake's Messages list, read with twilio-python
as the sender's reconcile reads Twilio's."""

from __future__ import annotations

import dataclasses
import secrets
import time
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import REGISTRY
from twilio.rest import Client

from omnichannel import metrics
from omnichannel.addresses import phone_address, user_address
from omnichannel.channels import SMS
from omnichannel.identity import IdentityStore
from omnichannel.rendering.sms import SmsMessage
from omnichannel.settings import Settings
from omnichannel.sms_sender import (
    STATUS_PATH,
    NoPhoneOnFile,
    SmsOptedOut,
    SmsOutcomeUnknown,
    SmsSender,
    SmsSendFailed,
)
from testkit.fake_twilio import AFTER_CREATE_500, AFTER_CREATE_DROP, FakeTwilio
from testkit.phone_numbers import new_phone_number
from testkit.processes import free_port


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


def sends(outcome: str) -> float:
    return REGISTRY.get_sample_value("omnichannel_sms_sends_total", {"outcome": outcome}) or 0.0


@pytest.mark.parametrize("after_create", [AFTER_CREATE_500, AFTER_CREATE_DROP])
async def test_a_send_created_despite_an_error_is_found_in_twilios_records_not_resent(
    after_create: str, sender_env: Settings, fake_twilio: FakeTwilio
) -> None:
    """Twilio created the message, then answered 500 or dropped the connection: the sender
    reads Twilio's records, finds it and returns its SID instead of texting it twice."""
    number = new_phone_number()
    cid = await _phone_conversation(number)
    before = sends(metrics.SMS_RECONCILED_SENT)
    fake_twilio.fail_after_create(after_create)
    sender = SmsSender(sender_env, backoff_seconds=0.01, reconcile_delay_seconds=0)
    sids = await sender.send(cid, "once, whatever the wire says")
    [sent] = fake_twilio.messages_to(number)
    assert sids == [sent.sid]
    assert sends(metrics.SMS_RECONCILED_SENT) == before + 1


async def test_a_send_twilio_failed_before_creating_is_sent_again_once(
    sender_env: Settings, fake_twilio: FakeTwilio
) -> None:
    """A 500 that created nothing: the records show no such message, so it is sent again."""
    number = new_phone_number()
    cid = await _phone_conversation(number)
    missing, sent_before = sends(metrics.SMS_RECONCILED_MISSING), sends(metrics.SMS_SENT)
    fake_twilio.fail_next(500)
    sender = SmsSender(sender_env, backoff_seconds=0.01, reconcile_delay_seconds=0)
    sids = await sender.send(cid, "after the outage")
    assert [(m.sid, m.body) for m in fake_twilio.messages_to(number)] == [
        (sids[0], "after the outage")
    ]
    assert sends(metrics.SMS_RECONCILED_MISSING) == missing + 1
    assert sends(metrics.SMS_SENT) == sent_before + 1

    fake_twilio.fail_next(503, count=3)  # never created, on every attempt
    with pytest.raises(SmsSendFailed, match="after 3 attempts") as failed:
        await sender.send(cid, "never")
    assert not isinstance(failed.value, SmsOutcomeUnknown)
    assert len(fake_twilio.messages_to(number)) == 1


async def test_an_unknown_outcome_twilio_cannot_tell_is_neither_resent_nor_called_failed(
    sender_env: Settings, fake_twilio: FakeTwilio
) -> None:
    number = new_phone_number()
    cid = await _phone_conversation(number)
    fake_twilio.fail_after_create(AFTER_CREATE_DROP)
    fake_twilio.fail_next_list(500)
    sender = SmsSender(sender_env, backoff_seconds=0.01, reconcile_delay_seconds=0)
    first = SmsMessage(body="part one")
    with pytest.raises(SmsOutcomeUnknown, match="could not be read") as unknown:
        await sender.send_rendered(cid, [first, SmsMessage(body="part two")])
    assert unknown.value.sent == []
    [created] = fake_twilio.messages_to(number)
    assert created.body == "part one"  # sent once, not retried blindly, part two not begun


async def test_find_sent_pairs_each_part_with_its_own_record(
    sender_env: Settings, fake_twilio: FakeTwilio
) -> None:
    """Two parts with one body need two records; records before the window do not count."""
    number = new_phone_number()
    cid = await _phone_conversation(number)
    sender = SmsSender(sender_env, reconcile_delay_seconds=0)
    [older] = await sender.send(cid, "same words")
    later = time.time() + 2 * 5 + 1  # beyond the clock skew allowed: the old one is not it
    parts = [SmsMessage(body="same words"), SmsMessage(body="same words")]
    assert await sender.find_sent(number, None, parts, since=later) == [None, None]
    since = time.time()
    [newer] = await sender.send(cid, "same words")
    found = await sender.find_sent(number, None, parts, since=since)
    assert sorted(filter(None, found)) == sorted([older, newer])  # within the skew allowed
    assert await sender.find_sent(number, None, parts, since=since, exclude=[older]) == [
        newer,
        None,
    ]
    other = await sender.find_sent(number, "+15005550009", parts[:1], since=since)
    assert other == [None]  # sent from another number of ours


async def test_the_fake_lists_messages_as_twilio_does(
    sender_env: Settings, fake_twilio: FakeTwilio
) -> None:
    """twilio-python reads the fake's Messages list: filters, newest first, pages followed."""
    number = new_phone_number()
    cid = await _phone_conversation(number)
    sender = SmsSender(sender_env)
    sids = [(await sender.send(cid, f"message {n}"))[0] for n in range(5)]
    await sender.send(await _phone_conversation(new_phone_number()), "someone else")
    client = Client(fake_twilio.account_sid, fake_twilio.auth_token)
    client.api.base_url = fake_twilio.url
    listed = client.messages.list(to=number, from_="+15005550006", page_size=2)
    assert [m.sid for m in listed] == sids[::-1]
    assert {m.status for m in listed} == {"sent"} and listed[0].date_sent is not None
    page = client.messages.page(to=number, page_size=2)
    assert page.next_page_url is not None and len(list(page)) == 2
    today = datetime.now(timezone.utc)
    assert len(client.messages.list(to=number, date_sent_after=today - timedelta(minutes=1))) == 5
    assert client.messages.list(to=number, date_sent_before=today - timedelta(days=1)) == []
    assert client.messages.list(to=number, from_="+15005550009") == []


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
