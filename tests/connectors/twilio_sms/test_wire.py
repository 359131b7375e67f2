"""Twilio's wire format (connectors/twilio_sms/wire.py). Reading what Twilio posts: fast tests on
plain forms, and the bad-input table once more through the real stack (refused there without
writing anything). The TwiML answers, read back as Twilio reads them."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from typing import Dict, Optional

import pytest
from multidict import MultiDict

from connectors.twilio_sms.wire import (
    EMPTY_TWIML,
    HELP_INTENT,
    PICTURE_INTENT,
    InboundMedia,
    InboundSms,
    Rejected,
    StatusCallback,
    idempotency_token,
    twiml,
)
from omnichannel.addresses import phone_address
from omnichannel.rendering.sms import SmsMessage
from testkit.phone_numbers import new_phone_number
from testkit.processes import RedisServer
from testkit.stack import RasaStack
from testkit.twilio_webhook import new_sid, sms_form
from tests.connectors.twilio_sms.helpers import (
    conversation_of,
    delivery_recorded,
    inbound,
    post_signed,
)

ENV = {"TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_PHONE_NUMBER": "+15005550006"}
SENDER = "+14155552671"


def form(body: str = "where is my order", **extra: str) -> Dict[str, str]:
    return {**sms_form(ENV, SENDER, body), **extra}


def parse(params: Dict[str, str]) -> InboundSms:
    return InboundSms.parse(params, "US")


@pytest.mark.unit
def test_num_media_must_be_plain_digits() -> None:
    """ "²" passes str.isdigit() but int() refuses it: a 400, not a 500."""
    params = MultiDict(
        MessageSid=new_sid(), From="+14155552671", Body="hi", NumMedia="\u00b2", To="+15005550006"
    )
    with pytest.raises(Rejected) as refused:
        InboundSms.parse(params, "US")
    assert refused.value.status == 400 and "NumMedia must be" in refused.value.reason
    for digits in ("\u0663", "1\u0661"):  # Arabic-Indic digits: int() reads them, Twilio never
        with pytest.raises(Rejected, match="NumMedia must be"):
            parse(form(NumMedia=digits))


@pytest.mark.unit
def test_a_message_is_read_field_by_field() -> None:
    picture = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"
    params = {**sms_form(ENV, f"whatsapp:{SENDER}", " hi there ", media=[picture])}
    sms = parse(params)
    assert sms.message_sid == params["MessageSid"] and sms.message_sid.startswith("MM")
    assert sms.address == phone_address(SENDER, "US")
    assert (sms.to, sms.body) == ("+15005550006", " hi there ")
    assert sms.media == (InboundMedia(url=picture, content_type="image/jpeg"),)
    assert sms.reply_to == f"whatsapp:{SENDER}"
    assert parse(form()).reply_to == SENDER
    assert sms.channel == "whatsapp" and parse(form()).channel == "sms"
    assert sms.metadata() == {
        "channel": "whatsapp",
        "address": f"tel:{SENDER}",
        "message_sid": sms.message_sid,
        "to": "+15005550006",
        "media": [
            {
                "kind": "image",
                "content_type": "image/jpeg",
                "url": picture,
                "size": None,
                "source": "twilio",
            }
        ],
    }
    assert not sms.is_empty and parse(form("  ")).is_empty
    national = parse(form(From="(415) 555-2671"))
    assert national.address == phone_address(SENDER, "US")


KEYWORDS = [
    # body, OptOutType, opted out before, subscription change, intent
    ("Stop", None, False, True, None),
    ("stop.", None, False, True, None),
    ("  UNSUBSCRIBE! ", None, False, True, None),
    ("arrêtez", "STOP", False, True, None),
    ("please stop texting me", None, False, None, None),
    ("START", None, True, False, None),
    ("unstop", None, False, False, None),
    ("yes", None, True, False, None),
    ("yes", None, False, None, None),
    ("HELP", None, False, None, HELP_INTENT),
    ("info", None, False, None, HELP_INTENT),
    ("aide", "HELP", False, None, HELP_INTENT),
    ("where is my order", None, False, None, None),
]


@pytest.mark.unit
@pytest.mark.parametrize(("body", "opt_out_type", "opted_out", "change", "intent"), KEYWORDS)
def test_keywords_change_the_subscription_or_stand_for_an_intent(
    body: str, opt_out_type: Optional[str], opted_out: bool, change, intent
) -> None:
    extra = {"OptOutType": opt_out_type} if opt_out_type else {}
    sms = parse(form(body, **extra))
    assert sms.opt_out_change(opted_out) is change
    assert sms.intent == intent


@pytest.mark.unit
def test_a_picture_alone_stands_for_the_picture_intent_and_odd_opt_out_types_are_ignored() -> None:
    picture = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages/MM1/Media/ME1"
    assert parse(sms_form(ENV, SENDER, "", media=[picture])).intent == PICTURE_INTENT
    odd = parse(form("hello", OptOutType="SOMETHING"))
    assert (odd.opt_out_type, odd.keyword, odd.intent) == (None, None, None)


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
#: The account is the signature check's to refuse (test_auth.py); the rest is parsing's.
PARSING_CASES = [case for case in BAD_INPUT if case[0] != "other account"]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("case", "mutate", "status", "reason"), PARSING_CASES, ids=[c[0] for c in PARSING_CASES]
)
def test_bad_input_is_rejected_with_a_reason(case, mutate, status: int, reason: str) -> None:
    with pytest.raises(Rejected) as refused:
        parse(mutate(form()))
    assert refused.value.status == status
    assert reason in refused.value.reason


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
        assert not delivery_recorded(stack_redis, params["MessageSid"])


def status_form(status: str, error: str = "", to: str = SENDER) -> Dict[str, str]:
    sid = new_sid()
    params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status}
    params.update({"To": to} if to else {})
    params.update({"ErrorCode": error} if error else {})
    return params


@pytest.mark.unit
def test_status_callbacks_are_read_and_failures_recognised() -> None:
    delivered = StatusCallback.parse(status_form("delivered"), "US")
    assert (delivered.status, delivered.error_code, delivered.failed) == ("delivered", None, False)
    assert delivered.recipient == phone_address(SENDER, "US")
    undelivered = StatusCallback.parse(status_form("undelivered", "30003"), "US")
    assert undelivered.failed and not undelivered.opted_out
    unsubscribed = StatusCallback.parse(status_form("failed", "21610"), "US")
    assert unsubscribed.failed and unsubscribed.opted_out
    assert StatusCallback.parse(status_form("sent", to=""), "US").recipient is None
    legacy = {"SmsSid": new_sid(), "SmsStatus": "Sent"}
    assert StatusCallback.parse(legacy, "US").status == "sent"

    refusals = [
        ({**status_form("failed"), "ErrorCode": "30003; DROP"}, "ErrorCode is not a number"),
        ({**status_form(""), "MessageStatus": "", "SmsStatus": ""}, "MessageStatus missing"),
        ({**status_form("failed"), "MessageStatus": "f@iled"}, "MessageStatus missing"),
        (status_form("failed", to="nobody"), "To: not a phone"),
        (_without("MessageSid", "SmsSid")(status_form("failed")), "MessageSid missing"),
    ]
    for params, reason in refusals:
        with pytest.raises(Rejected) as refused:
            StatusCallback.parse(params, "US")
        assert refused.value.status == 400 and reason in refused.value.reason


@pytest.mark.unit
def test_a_malformed_idempotency_token_is_ignored_not_refused() -> None:
    assert idempotency_token("idem-" + "a" * 40) == "idem-" + "a" * 40
    assert idempotency_token(None) is None
    assert idempotency_token("x" * 257) is None
    assert idempotency_token("bad\x00token") is None


# -- TwiML answers, read back as Twilio reads them --------------------------------------------


@pytest.mark.unit
def test_no_messages_is_an_empty_response_meaning_no_reply() -> None:
    root = ElementTree.fromstring(EMPTY_TWIML)
    assert (root.tag, list(root)) == ("Response", [])
    assert twiml() == EMPTY_TWIML


@pytest.mark.unit
def test_messages_carry_their_body_and_media_in_order() -> None:
    answer = twiml(
        [
            SmsMessage(body="Your order <12345> & more"),
            SmsMessage(body="", media_urls=("https://i.example/a.png", "https://i.example/b.png")),
        ]
    )
    root = ElementTree.fromstring(answer)
    first, second = root.findall("Message")
    assert first.text == "Your order <12345> & more"  # escaped in the XML, intact when read
    assert first.findall("Media") == []
    assert [m.text for m in second.findall("Media")] == [
        "https://i.example/a.png",
        "https://i.example/b.png",
    ]


def test_whatsapp_fields_taps_and_locations_are_read_and_bounded() -> None:
    whatsapp = {
        **form("", From=f"whatsapp:{SENDER}"),
        "ProfileName": "Ana",
        "ButtonPayload": "/request_refund",
        "ButtonText": "Start a refund",
    }
    tapped = parse(whatsapp)
    assert tapped.channel == "whatsapp" and tapped.tapped == "/request_refund"
    assert tapped.tapped_title == "Start a refund" and tapped.profile_name == "Ana"
    assert tapped.intent is None and not tapped.is_empty  # the tap is the message
    # A list-picker choice may come as ListId/ListTitle.
    listed = parse({**form("", From=f"whatsapp:{SENDER}"), "ListId": "/a", "ListTitle": "A"})
    assert (listed.tapped, listed.tapped_title) == ("/a", "A")
    # By SMS these fields mean nothing and are not read.
    assert parse({**form("x"), "ButtonPayload": "/request_refund"}).tapped is None
    located = parse(
        {**form("", From=f"whatsapp:{SENDER}"), "Latitude": "-33.8688", "Longitude": "151.2093"}
    )
    assert located.intent == "/share_location" and located.location.latitude == -33.8688
    for latitude, longitude in (("91", "0"), ("1e3", "0"), ("0", ""), ("north", "0")):
        with pytest.raises(Rejected):
            parse(
                {
                    **form("", From=f"whatsapp:{SENDER}"),
                    "Latitude": latitude,
                    "Longitude": longitude,
                }
            )


def test_status_callbacks_name_their_channel_and_the_inline_reply_they_answer() -> None:
    params = {"MessageSid": new_sid(), "MessageStatus": "read", "To": f"whatsapp:{SENDER}"}
    answered = new_sid()
    callback = StatusCallback.parse(params, "US", reply_to=answered)
    assert (callback.channel, callback.reply_to, callback.status) == ("whatsapp", answered, "read")
    assert StatusCallback.parse(params, "US", reply_to="../etc").reply_to is None
    root = ElementTree.fromstring(twiml([SmsMessage(body="hi")], "https://x/status?reply_to=SM1"))
    assert root.find("Message").get("statusCallback") == "https://x/status?reply_to=SM1"
