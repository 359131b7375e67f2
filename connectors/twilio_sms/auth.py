"""Is this webhook from Twilio, for our account? The ``X-Twilio-Signature`` check, on data.

:class:`WebhookValidator` takes what a request carries (path, query string, headers, body bytes),
not a Sanic request, as twilio-python's ``RequestValidator.validate(url, params, signature)``
does: it bounds the body and its field count, rebuilds the public URL Twilio signed
(:func:`public_url`), checks the signature before anything else is read, and refuses another
account's requests. Unsigned or forged requests are :class:`Rejected` with 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional
from urllib.parse import parse_qsl

from multidict import MultiDict
from twilio.request_validator import RequestValidator

from connectors.twilio_sms.wire import Rejected
from omnichannel.errors import ConfigError
from omnichannel.settings import Settings

#: A Twilio webhook is a few hundred bytes to a few KB; anything far larger is not Twilio.
MAX_REQUEST_BYTES = 64 * 1024
MAX_FIELDS = 200


def public_url(path: str, query_string: str, base_url: str) -> str:
    """The URL Twilio called, which is what it signed: the configured public base URL and the
    request's path and query.

    TLS usually ends at a proxy, so the URL this process sees (``http://internal:5005``) is not
    the one Twilio signed; the operator's ``PUBLIC_BASE_URL`` is. Forwarded headers are never
    used: a client can write ``X-Forwarded-Proto``/``X-Forwarded-Host`` itself, or have a proxy
    copy its ``Host`` into them, and so pick the URL its signature is checked against.
    """
    url = base_url.rstrip("/") + path
    return f"{url}?{query_string}" if query_string else url


@dataclass(frozen=True)
class WebhookValidator:
    """The signature check for one Twilio account, built once from the settings."""

    auth_token: str
    account_sid: str
    public_base_url: str

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookValidator:
        token, account = settings.twilio_auth_token, settings.twilio_account_sid
        if not token or not account:
            raise ConfigError("TWILIO_AUTH_TOKEN and TWILIO_ACCOUNT_SID check Twilio's signatures")
        return cls(
            auth_token=token,
            account_sid=account,
            public_base_url=settings.public_base_url,
        )

    def signed_form(
        self, path: str, query_string: str, headers: Mapping[str, str], body: bytes
    ) -> MultiDict:
        """The form parameters, once their Twilio signature is proven; else Rejected.

        Parameters are not whitelisted before the check (Twilio adds new ones without notice and
        signs them all); blank values are kept, as Twilio signs those too. Header names may come
        in any case; of a repeated header the first counts.
        """
        lowered = _lowered(headers)
        if len(body) > MAX_REQUEST_BYTES:
            raise Rejected(413, "request body too large")
        refusal = head_refusal(lowered)
        if refusal is not None:
            raise refusal
        signature = lowered["x-twilio-signature"]
        try:
            pairs = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=MAX_FIELDS,
            )
        except (UnicodeDecodeError, ValueError):
            raise Rejected(400, "body is not valid UTF-8 form data") from None
        form = MultiDict(pairs)
        url = public_url(path, query_string, self.public_base_url)
        if not RequestValidator(self.auth_token).validate(url, form, signature):
            raise Rejected(403, "invalid X-Twilio-Signature")
        account = form.get("AccountSid")
        if account is not None and account != self.account_sid:
            raise Rejected(403, "request for another Twilio account")
        return form


def _lowered(headers: Mapping[str, str]) -> Dict[str, str]:
    """Header names in lower case; of a repeated header the first counts."""
    lowered: Dict[str, str] = {}
    for name, value in headers.items():
        lowered.setdefault(name.lower(), value)
    return lowered


def head_refusal(headers: Mapping[str, str]) -> Optional[Rejected]:
    """What the headers alone rule out (no signature, not a form), before a body is read."""
    lowered = _lowered(headers)
    content_type = (lowered.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return Rejected(415, "expected application/x-www-form-urlencoded")
    if not lowered.get("x-twilio-signature"):
        return Rejected(403, "missing X-Twilio-Signature")
    return None
