"""Twilio's webhooks as Twilio sends them: the one builder of a signed inbound SMS.

Tests, benchmarks and the simulator (``devtools.sim_sms``) all text the assistant through this
module, so there is one idea of what Twilio posts. The signature is twilio-python's
``RequestValidator.compute_signature`` over the public URL Twilio would call
(``PUBLIC_BASE_URL`` + path) with the account's auth token, exactly what Twilio does: the request
passes the connector's signature check as production traffic does.

``env`` is a stack's environment (:attr:`testkit.stack.RasaStack.env`, or ``.env``): it names
``PUBLIC_BASE_URL``, ``TWILIO_AUTH_TOKEN``, ``TWILIO_ACCOUNT_SID`` and ``TWILIO_PHONE_NUMBER``.
"""

from __future__ import annotations

import mimetypes
import secrets
from dataclasses import dataclass
from typing import Dict, Mapping, Sequence

from twilio.request_validator import RequestValidator

from omnichannel.channels import TWILIO_SMS

WEBHOOK_PATH = f"/webhooks/{TWILIO_SMS}/webhook"


def new_sid(prefix: str = "SM") -> str:
    """A fresh Twilio SID (``SM…`` a message, ``MM…`` a message with media)."""
    return prefix + secrets.token_hex(16)


def sms_form(
    env: Mapping[str, str],
    sender: str,
    body: str,
    media: Sequence[str] = (),
    to: str = "",
) -> Dict[str, str]:
    """The parameters Twilio posts for an incoming SMS (MMS with ``media`` picture URLs) from
    ``sender`` to ``to`` (default: the assistant's ``TWILIO_PHONE_NUMBER``)."""
    sid = new_sid("MM" if media else "SM")
    form = {
        "ToCountry": "US",
        "ToState": "CA",
        "SmsMessageSid": sid,
        "NumMedia": str(len(media)),
        "ToCity": "",
        "FromZip": "",
        "SmsSid": sid,
        "FromState": "CA",
        "SmsStatus": "received",
        "FromCity": "SAN FRANCISCO",
        "Body": body,
        "FromCountry": "US",
        "To": to or env["TWILIO_PHONE_NUMBER"],
        "ToZip": "",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": env["TWILIO_ACCOUNT_SID"],
        "From": sender,
        "ApiVersion": "2010-04-01",
    }
    for index, url in enumerate(media):
        form[f"MediaUrl{index}"] = url
        form[f"MediaContentType{index}"] = mimetypes.guess_type(url)[0] or "image/jpeg"
    return form


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """``X-Twilio-Signature`` for ``params`` posted to ``url``, signed with ``auth_token``."""
    return RequestValidator(auth_token).compute_signature(url, dict(params))


def signed_headers(
    env: Mapping[str, str], params: Mapping[str, str], path: str = WEBHOOK_PATH
) -> Dict[str, str]:
    """The headers Twilio sends with ``params`` to ``path``: signed over PUBLIC_BASE_URL + path."""
    url = env["PUBLIC_BASE_URL"].rstrip("/") + path
    return {"X-Twilio-Signature": signature(env["TWILIO_AUTH_TOKEN"], url, params)}


@dataclass(frozen=True)
class SignedSms:
    """One incoming-SMS webhook: POST ``form`` with ``headers`` to the server's ``path``."""

    path: str
    form: Dict[str, str]
    headers: Dict[str, str]


def signed_sms(
    env: Mapping[str, str],
    sender: str,
    body: str,
    media: Sequence[str] = (),
    to: str = "",
    path: str = WEBHOOK_PATH,
) -> SignedSms:
    """An incoming SMS from ``sender`` as Twilio posts it to ``path``, signed."""
    form = sms_form(env, sender, body, media, to)
    return SignedSms(path, form, signed_headers(env, form, path))
