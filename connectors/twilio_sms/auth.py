"""Is this webhook from Twilio, for our account? The ``X-Twilio-Signature`` check, on data.

:class:`WebhookValidator` takes what a request carries (path, query string, headers, body bytes),
not a Sanic request, as twilio-python's ``RequestValidator.validate(url, params, signature)``
does: it bounds the body and its field count, rebuilds the public URL Twilio signed
(:func:`public_url`), checks the signature before anything else is read, and refuses another
account's requests. Unsigned or forged requests are :class:`Rejected` with 403.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional
from urllib.parse import parse_qsl

from multidict import MultiDict
from twilio.request_validator import RequestValidator

from connectors.twilio_sms.wire import Rejected
from omnichannel.settings import Settings

#: A Twilio webhook is a few hundred bytes to a few KB; anything far larger is not Twilio.
MAX_REQUEST_BYTES = 64 * 1024
MAX_FIELDS = 200

_FORWARDED_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


def _first_forwarded(value: Optional[str]) -> str:
    return (value or "").split(",")[0].strip()


def public_url(
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    base_url: str,
    trust_proxy_headers: bool,
) -> str:
    """The URL Twilio called, which is what it signed (``headers`` with lower-case names).

    TLS usually ends at a proxy, so the URL this process sees (``http://internal:5005``) is not
    the one Twilio signed. By default the configured public base URL is used; only when the
    operator says a proxy they control sets them are ``X-Forwarded-Proto``/``X-Forwarded-Host``
    believed (a client could otherwise pick the URL it is checked against).
    """
    base = base_url.rstrip("/")
    if trust_proxy_headers:
        proto = _first_forwarded(headers.get("x-forwarded-proto")).lower()
        host = _first_forwarded(headers.get("x-forwarded-host")) or (headers.get("host") or "")
        if proto in ("http", "https") and _FORWARDED_HOST.fullmatch(host):
            base = f"{proto}://{host}"
    url = base + path
    return f"{url}?{query_string}" if query_string else url


@dataclass(frozen=True)
class WebhookValidator:
    """The signature check for one Twilio account, built once from the settings."""

    auth_token: str
    account_sid: str
    public_base_url: str
    trust_proxy_headers: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookValidator:
        return cls(
            auth_token=settings.twilio_auth_token,
            account_sid=settings.twilio_account_sid,
            public_base_url=settings.public_base_url,
            trust_proxy_headers=settings.trust_proxy_headers,
        )

    def signed_form(
        self, path: str, query_string: str, headers: Mapping[str, str], body: bytes
    ) -> MultiDict:
        """The form parameters, once their Twilio signature is proven; else Rejected.

        Parameters are not whitelisted before the check (Twilio adds new ones without notice and
        signs them all); blank values are kept, as Twilio signs those too. Header names may come
        in any case; of a repeated header the first counts.
        """
        lowered: dict = {}
        for name, value in headers.items():
            lowered.setdefault(name.lower(), value)
        if len(body) > MAX_REQUEST_BYTES:
            raise Rejected(413, "request body too large")
        content_type = (lowered.get("content-type") or "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise Rejected(415, "expected application/x-www-form-urlencoded")
        signature = lowered.get("x-twilio-signature")
        if not signature:
            raise Rejected(403, "missing X-Twilio-Signature")
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
        url = public_url(
            path, query_string, lowered, self.public_base_url, self.trust_proxy_headers
        )
        if not RequestValidator(self.auth_token).validate(url, form, signature):
            raise Rejected(403, "invalid X-Twilio-Signature")
        account = form.get("AccountSid")
        if account is not None and account != self.account_sid:
            raise Rejected(403, "request for another Twilio account")
        return form
