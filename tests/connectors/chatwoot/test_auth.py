"""The webhook's caller checks: Chatwoot's HMAC signature over "{timestamp}.{body}", its age, and
the secret URL for Chatwoot that does not sign. The signatures here are computed independently
of the code under test (hmac on the documented string)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

import pytest

from connectors.chatwoot.auth import WebhookRefused, WebhookVerifier, signature_of

pytestmark = pytest.mark.unit

SECRET = secrets.token_urlsafe(24)
BODY = b'{"event":"message_created","id":1}'
NOW = 1_800_000_000.0


def signed(body: bytes = BODY, at: float = NOW, secret: str = SECRET, **extra: str) -> dict:
    stamp = str(int(at))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {
        "x-chatwoot-signature": f"sha256={digest}",
        "x-chatwoot-timestamp": stamp,
        "x-chatwoot-delivery": "4f1c6c2e-8d0a-4c4e-9a53-1b6d2a0e7f10",
        **extra,
    }


def test_signature_of_is_the_documented_hmac() -> None:
    expected = hmac.new(b"k", b"123.body", hashlib.sha256).hexdigest()
    assert signature_of("k", "123", b"body") == f"sha256={expected}"


def test_a_signed_request_passes_and_names_its_delivery() -> None:
    verified = WebhookVerifier(SECRET, None).verify(signed(), None, BODY, NOW + 30)
    assert verified.delivery_id == "4f1c6c2e-8d0a-4c4e-9a53-1b6d2a0e7f10"
    assert verified.signature and len(verified.signature) == 64


@pytest.mark.parametrize(
    "headers, body, reason",
    [
        (signed(secret=secrets.token_urlsafe(24)), BODY, "bad signature"),
        (signed(), BODY + b" ", "bad signature"),
        (signed(at=NOW - 301), BODY, "more than 300 s ago"),
        (signed(at=NOW + 120), BODY, "in the future"),
        ({}, BODY, "unsigned"),
        ({**signed(), "x-chatwoot-signature": "sha1=abc"}, BODY, "malformed X-Chatwoot-Signature"),
        ({**signed(), "x-chatwoot-timestamp": "yesterday"}, BODY, "malformed X-Chatwoot-Timestamp"),
    ],
)
def test_what_chatwoot_did_not_sign_now_is_refused(headers: dict, body: bytes, reason: str) -> None:
    with pytest.raises(WebhookRefused, match=reason) as refused:
        WebhookVerifier(SECRET, None).verify(headers, None, body, NOW)
    assert refused.value.status == 401


def test_the_timestamp_is_inside_the_signature() -> None:
    """A captured request given a fresh timestamp no longer matches its signature."""
    old = signed(at=NOW - 3600)
    fresh = {**old, "x-chatwoot-timestamp": str(int(NOW))}
    with pytest.raises(WebhookRefused, match="bad signature"):
        WebhookVerifier(SECRET, None).verify(fresh, None, BODY, NOW)


def test_a_malformed_delivery_id_is_a_bad_request() -> None:
    with pytest.raises(WebhookRefused) as refused:
        WebhookVerifier(SECRET, None).verify(
            signed(**{"x-chatwoot-delivery": "a b"}), None, BODY, NOW
        )
    assert refused.value.status == 400


def test_the_secret_url_is_compared_and_required() -> None:
    secret = "u" * 40
    verifier = WebhookVerifier(None, secret)
    assert verifier.verify({}, secret, BODY, NOW).signature is None
    with pytest.raises(WebhookRefused, match="wrong webhook URL secret"):
        verifier.verify({}, "u" * 39 + "v", BODY, NOW)
    with pytest.raises(WebhookRefused, match="secret URL only"):
        verifier.verify({}, None, BODY, NOW)


def test_with_both_configured_both_are_needed() -> None:
    verifier = WebhookVerifier(SECRET, "u" * 40)
    assert verifier.verify(signed(), "u" * 40, BODY, NOW).signature
    with pytest.raises(WebhookRefused, match="unsigned"):
        verifier.verify({}, "u" * 40, BODY, NOW)


def test_a_secret_url_that_is_not_configured_does_not_exist() -> None:
    with pytest.raises(WebhookRefused) as refused:
        WebhookVerifier(SECRET, None).verify(signed(), "guess", BODY, NOW)
    assert refused.value.status == 404


def test_the_head_alone_is_checked_before_the_body_is_read() -> None:
    """What needs no body (the secret URL, the signature headers' presence, form and age) is
    refused before a byte of the body is read; the signature itself needs the body."""
    verifier = WebhookVerifier(SECRET, "u" * 40)
    verifier.check_head(signed(body=b"another body"), "u" * 40, NOW)
    for headers, url_secret, reason in [
        (signed(), None, "secret URL only"),
        ({}, "u" * 40, "unsigned"),
        (signed(at=NOW - 900), "u" * 40, "ago"),
    ]:
        with pytest.raises(WebhookRefused, match=reason):
            verifier.check_head(headers, url_secret, NOW)
