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
from typing import Dict, Mapping, Optional, Sequence

from twilio.request_validator import RequestValidator

from omnichannel.channels import TWILIO_SMS, WHATSAPP_PREFIX

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
    media_types: Optional[Sequence[str]] = None,
) -> Dict[str, str]:
    """The parameters Twilio posts for an incoming SMS (MMS with ``media`` URLs, of
    ``media_types`` or the types their extensions name) from ``sender`` to ``to`` (default: the
    assistant's ``TWILIO_PHONE_NUMBER``)."""
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
        form[f"MediaContentType{index}"] = (
            media_types[index] if media_types else mimetypes.guess_type(url)[0] or "image/jpeg"
        )
    return form


def whatsapp_sender(env: Mapping[str, str]) -> str:
    """The assistant's WhatsApp address (``TWILIO_WHATSAPP_NUMBER``, else its phone number)."""
    number = env.get("TWILIO_WHATSAPP_NUMBER") or env["TWILIO_PHONE_NUMBER"]
    return number if number.startswith(WHATSAPP_PREFIX) else WHATSAPP_PREFIX + number


def whatsapp_form(
    env: Mapping[str, str],
    number: str,
    body: str,
    media: Sequence[str] = (),
    media_types: Optional[Sequence[str]] = None,
    profile_name: str = "Ana",
    **extra: str,
) -> Dict[str, str]:
    """The parameters Twilio posts for an incoming WhatsApp message from ``number`` (E.164):
    the SMS parameters with ``whatsapp:`` addresses and WhatsApp's own (Twilio's messaging
    webhook request page): ``ProfileName``, ``WaId``, ``MessageType``, and ``extra`` such as a
    tapped quick reply's ``ButtonPayload``/``ButtonText`` or a location's ``Latitude``…"""
    form = sms_form(
        env, WHATSAPP_PREFIX + number, body, media, to=whatsapp_sender(env), media_types=media_types
    )
    for geo in ("ToCountry", "ToState", "ToCity", "ToZip", "FromZip", "FromState", "FromCity"):
        form.pop(geo, None)
    kind = "button" if "ButtonPayload" in extra else "location" if "Latitude" in extra else None
    form.update(
        {
            "ProfileName": profile_name,
            "WaId": number.lstrip("+"),
            "MessageType": kind or ("image" if media else "text"),
            **extra,
        }
    )
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
