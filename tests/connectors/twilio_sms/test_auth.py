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
from omnichannel.errors import ConfigError
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


@pytest.mark.unit
def test_the_shared_builders_requests_pass_and_their_fields_are_read() -> None:
    sms = signed_sms(ENV, "+14155552671", "hi, café ✓")
    form = check(sms.form, sms.headers)
    assert form["Body"] == "hi, café ✓" and form["MessageSid"] == sms.form["MessageSid"]
    lower_case = {name.lower(): value for name, value in sms.headers.items()}
    assert check(sms.form, lower_case)["From"] == "+14155552671"
    blank_kept = {**sms.form, "ToCity": ""}
    assert check(blank_kept, signed_headers(ENV, blank_kept))["ToCity"] == ""


@pytest.mark.unit
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


@pytest.mark.unit
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


@pytest.mark.unit
def test_the_signed_url_is_the_configured_one_whatever_the_headers_say() -> None:
    base = "https://public.example.org"
    assert public_url(WEBHOOK, "", base) == base + WEBHOOK
    assert public_url(WEBHOOK, "a=1", base + "/") == base + WEBHOOK + "?a=1"


@pytest.mark.unit
def test_a_signature_for_a_url_the_forwarded_headers_claim_is_refused() -> None:
    """Before: with TRUST_PROXY_HEADERS=true the URL was rebuilt from X-Forwarded-Proto/Host,
    which a client writes itself (or has a proxy copy from its Host): a signature for a URL of
    the client's choice passed. Now only PUBLIC_BASE_URL counts."""
    params = {"Body": "hi", "From": "+14155552671", "MessageSid": new_sid()}
    chosen = "https://attacker.example" + WEBHOOK
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "attacker.example"}
    headers = {"X-Twilio-Signature": signature(TOKEN, chosen, params), **forwarded}
    assert refusal(params, headers) == (403, "invalid X-Twilio-Signature")
    configured = signature(TOKEN, ENV["PUBLIC_BASE_URL"] + WEBHOOK, params)
    assert check(params, {**forwarded, "X-Twilio-Signature": configured})["Body"] == "hi"


@pytest.mark.unit
def test_the_retired_trust_proxy_headers_variable_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="TRUSTED_PROXY_HOPS"):
        Settings.from_env({**ENV, "TRUST_PROXY_HEADERS": "true"})
    assert Settings.from_env({**ENV, "TRUST_PROXY_HEADERS": "false"}).trusted_proxy_hops == 0
    assert Settings.from_env({**ENV, "TRUSTED_PROXY_HOPS": "2"}).trusted_proxy_hops == 2
    for bad in ("-1", "11", "one", "\u0661"):
        with pytest.raises(ConfigError, match="TRUSTED_PROXY_HOPS"):
            Settings.from_env({**ENV, "TRUSTED_PROXY_HOPS": bad})


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
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"},
        timeout=10,
    )
    assert huge.status_code == 413
    # Without a signature it is refused before its body is read.
    unsigned = httpx.post(
        url,
        content=b"Body=" + b"x" * 70_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert unsigned.status_code == 403
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
