"""The signature check (connectors/twilio_sms/auth.py): fast tests of the validator on data, signed
with twilio-python's RequestValidator as Twilio signs, and the same refusals through the real
stack, where nothing may be written for a refused request."""

from __future__ import annotations

import secrets
from typing import Mapping, Union
from urllib.parse import urlencode

import httpx
import pytest
from multidict import MultiDict

from connectors.twilio_sms.auth import MAX_FIELDS, WebhookValidator, public_url
from connectors.twilio_sms.wire import Rejected
from omnichannel.settings import Settings
from testkit.phone_numbers import new_phone_number
from testkit.processes import RedisServer
from testkit.stack import RasaStack
from testkit.twilio_webhook import new_sid, signature, signed_headers, signed_sms
from tests.connectors.twilio_sms.helpers import (
    WEBHOOK,
    conversation_of,
    delivery_recorded,
    inbound,
    post_signed,
    replies,
    text_sms,
)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TOKEN = secrets.token_hex(16)
ENV = {
    "PUBLIC_BASE_URL": "https://configured.example",
    "TWILIO_AUTH_TOKEN": TOKEN,
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_PHONE_NUMBER": "+15005550006",
}
VALIDATOR = WebhookValidator(
    auth_token=TOKEN, account_sid=ENV["TWILIO_ACCOUNT_SID"], public_base_url=ENV["PUBLIC_BASE_URL"]
)


def check(
    params: Union[Mapping[str, str], bytes],
    headers: Mapping[str, str],
    validator: WebhookValidator = VALIDATOR,
    path: str = WEBHOOK,
    query: str = "",
) -> MultiDict:
    """What the webhook does with a request: the validator on its path, headers and body
    (``params`` form-encoded, or raw bytes), sent as a form unless ``headers`` say otherwise."""
    body = params if isinstance(params, bytes) else urlencode(params).encode()
    return validator.signed_form(path, query, {**FORM, **headers}, body)


def refusal(params: Union[Mapping[str, str], bytes], headers: Mapping[str, str], **kwargs):
    """The (status, reason) the validator refuses the request with."""
    with pytest.raises(Rejected) as refused:
        check(params, headers, **kwargs)
    return refused.value.status, refused.value.reason


# ---------------------------------------------------------------------------------------------
# The validator on data
# ---------------------------------------------------------------------------------------------


def test_the_shared_builders_requests_pass_and_their_fields_are_read() -> None:
    sms = signed_sms(ENV, "+14155552671", "hi, café ✓")
    form = check(sms.form, sms.headers)
    assert form["Body"] == "hi, café ✓" and form["MessageSid"] == sms.form["MessageSid"]
    lower_case = {name.lower(): value for name, value in sms.headers.items()}
    assert check(sms.form, lower_case)["From"] == "+14155552671"
    blank_kept = {**sms.form, "ToCity": ""}
    assert check(blank_kept, signed_headers(ENV, blank_kept))["ToCity"] == ""


def test_missing_forged_or_tampered_signatures_and_other_accounts_are_refused() -> None:
    sms = signed_sms(ENV, "+14155552671", "hello")
    assert refusal(sms.form, {}) == (403, "missing X-Twilio-Signature")
    url = ENV["PUBLIC_BASE_URL"] + WEBHOOK
    forged = {"X-Twilio-Signature": signature(secrets.token_hex(16), url, sms.form)}
    assert refusal(sms.form, forged) == (403, "invalid X-Twilio-Signature")
    tampered = {**sms.form, "Body": "refund order 12345"}
    assert refusal(tampered, sms.headers) == (403, "invalid X-Twilio-Signature")
    assert refusal(sms.form, sms.headers, path="/webhooks/twilio_sms/status")[0] == 403
    # the query string is part of the URL Twilio signs
    assert refusal(sms.form, sms.headers, query="a=1")[0] == 403
    other = {**sms.form, "AccountSid": "AC" + "f" * 32}
    assert refusal(other, signed_headers(ENV, other)) == (403, "request for another Twilio account")


def test_size_type_encoding_and_field_count_are_bounded() -> None:
    sms = signed_sms(ENV, "+14155552671", "hello")
    assert refusal(b"Body=" + b"x" * 70_000, sms.headers) == (413, "request body too large")
    as_json = {**sms.headers, "Content-Type": "application/json"}
    assert refusal(sms.form, as_json)[0] == 415
    assert refusal(b"Body=\xff\xfe&From=%2B14155552671", sms.headers) == (
        400,
        "body is not valid UTF-8 form data",
    )
    crowded = {f"F{index}": "x" for index in range(MAX_FIELDS + 1)}
    assert refusal(crowded, signed_headers(ENV, crowded))[0] == 400


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


def test_behind_a_trusted_proxy_the_forwarded_url_is_checked() -> None:
    """Settings with TRUST_PROXY_HEADERS: the URL X-Forwarded-* name is the one checked."""
    settings = Settings.from_env({**ENV, "TRUST_PROXY_HEADERS": "true"})
    trusting = WebhookValidator.from_settings(settings)
    params = {"Body": "hi", "From": "+14155552671", "MessageSid": new_sid()}
    tunnel = "https://abc123.tunnel.example" + WEBHOOK
    headers = {
        "X-Twilio-Signature": signature(TOKEN, tunnel, params),
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "abc123.tunnel.example",
    }
    assert check(params, headers, trusting)["Body"] == "hi"
    # without the setting, a signature for the URL the forwarded headers claim is refused: a
    # client cannot choose the URL it is checked against
    assert refusal(params, headers)[0] == 403
    # signed for the configured URL but forwarded from elsewhere: refused
    headers["X-Twilio-Signature"] = signature(TOKEN, "https://configured.example" + WEBHOOK, params)
    assert refusal(params, headers, validator=trusting)[0] == 403
    # the same signature without forwarded headers: the configured URL, accepted
    plain = {"X-Twilio-Signature": headers["X-Twilio-Signature"]}
    assert check(params, plain, trusting)["Body"] == "hi"
    # without the setting, forwarded headers are not believed at all
    assert check(params, headers, VALIDATOR)["Body"] == "hi"


# ---------------------------------------------------------------------------------------------
# Through the stack: refused requests write nothing
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
    wrong_key = signature(secrets.token_hex(16), public, forged)
    answer = httpx.post(url, data=forged, headers={"X-Twilio-Signature": wrong_key}, timeout=10)
    assert (answer.status_code, answer.text) == (403, "invalid X-Twilio-Signature")

    unsigned = inbound(rasa_stack, unsigned_number, "hello")
    answer = httpx.post(url, data=unsigned, timeout=10)
    assert (answer.status_code, answer.text) == (403, "missing X-Twilio-Signature")

    original = inbound(rasa_stack, signed, "hello")
    original_signature = signature(rasa_stack.env["TWILIO_AUTH_TOKEN"], public, original)
    tampered = {**original, "From": tampered_number, "Body": "refund order 12345"}
    answer = httpx.post(
        url, data=tampered, headers={"X-Twilio-Signature": original_signature}, timeout=10
    )
    assert answer.status_code == 403

    for params in (forged, unsigned, tampered):
        assert not delivery_recorded(stack_redis, params["MessageSid"])
    for number in (forged_number, unsigned_number, tampered_number):
        assert conversation_of(stack_redis, number) is None


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
