"""Who may call the Chatwoot webhook: a validator on data (headers, the URL's secret, the raw
body, the time), like twilio-python's ``RequestValidator``.

Chatwoot signs its webhooks since v4.11.2 (account webhooks) and v4.13.0 (API inboxes and agent
bots, each with its own ``secret``) (github.com/chatwoot/chatwoot/pull/13573, /issues/13862):

- ``X-Chatwoot-Signature: sha256=<hex>``: HMAC-SHA256, keyed with the secret, of
  ``"{timestamp}.{raw body}"``;
- ``X-Chatwoot-Timestamp``: when it was sent (Unix seconds), inside the signed string, so a
  captured request cannot be given a fresh time; older than ``max_age_seconds`` is refused;
- ``X-Chatwoot-Delivery``: a UUID per delivery, the same on Sidekiq's retries (replays are
  refused by :mod:`.state`, which remembers deliveries and signatures already taken).

Older Chatwoot sends nothing to check, so the webhook URL can carry a secret instead
(``/webhooks/chatwoot/webhook/<secret>``), compared in constant time. Both can be on at once:
then a request needs both. The secret path is weaker (it travels in every request line, so
proxies' access logs must not keep it) and offers no replay protection; the effects of a replay
are idempotent anyway (a reply is sent once per Chatwoot message id, transitions apply once).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Mapping, Optional

SIGNATURE_HEADER = "x-chatwoot-signature"
TIMESTAMP_HEADER = "x-chatwoot-timestamp"
DELIVERY_HEADER = "x-chatwoot-delivery"
#: A timestamp this far ahead of our clock is refused (clocks drift; a signer ahead by more is
#: wrong or forging).
MAX_FUTURE_SECONDS = 60

_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
_DELIVERY = re.compile(r"[A-Za-z0-9_\-:.]{1,100}")


class WebhookRefused(Exception):
    """The request is not from Chatwoot (or not any more: too old); ``reason`` is safe to log
    and to answer."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class VerifiedDelivery:
    """What a verified request says about itself: its delivery id and signature, by which a
    replay is recognised (None when Chatwoot did not sign it)."""

    delivery_id: Optional[str]
    signature: Optional[str]


def signature_of(secret: str, timestamp: str, body: bytes) -> str:
    """Chatwoot's ``X-Chatwoot-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(
        secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256
    ).hexdigest()
    return f"sha256={digest}"


@dataclass(frozen=True)
class WebhookVerifier:
    """Checks requests against the configured secrets (see the module docstring); at least one
    of ``hmac_secret`` and ``url_secret`` is set (the channel's options insist)."""

    hmac_secret: Optional[str]
    url_secret: Optional[str]
    max_age_seconds: int = 300

    def check_head(self, headers: Mapping[str, str], url_secret: Optional[str], now: float) -> None:
        """What the request head alone can show (the URL's secret; signature headers present,
        well-formed and fresh), checked before the body is read; raises WebhookRefused."""
        if self.url_secret is not None:
            if url_secret is None:
                raise WebhookRefused("this webhook is served at its secret URL only")
            if not hmac.compare_digest(url_secret.encode(), self.url_secret.encode()):
                raise WebhookRefused("wrong webhook URL secret")
        elif url_secret is not None:
            raise WebhookRefused("no such webhook URL", status=404)
        if self.hmac_secret is None:
            return
        signature = headers.get(SIGNATURE_HEADER, "")
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        if not signature or not timestamp:
            raise WebhookRefused("unsigned request (X-Chatwoot-Signature, X-Chatwoot-Timestamp)")
        if _SIGNATURE.fullmatch(signature) is None:
            raise WebhookRefused("malformed X-Chatwoot-Signature")
        if not timestamp.isdigit() or len(timestamp) > 12:
            raise WebhookRefused("malformed X-Chatwoot-Timestamp")
        sent = int(timestamp)
        if sent < now - self.max_age_seconds:
            raise WebhookRefused(f"signed more than {self.max_age_seconds} s ago")
        if sent > now + MAX_FUTURE_SECONDS:
            raise WebhookRefused("signed in the future")
        delivery = headers.get(DELIVERY_HEADER)
        if delivery is not None and not _DELIVERY.fullmatch(delivery):
            raise WebhookRefused("malformed X-Chatwoot-Delivery", status=400)

    def verify(
        self, headers: Mapping[str, str], url_secret: Optional[str], body: bytes, now: float
    ) -> VerifiedDelivery:
        """``headers`` (names in lower case), the secret path segment the request came on (None
        on the plain path) and the raw body; raises WebhookRefused."""
        self.check_head(headers, url_secret, now)
        if self.hmac_secret is None:
            return VerifiedDelivery(None, None)
        signature = headers[SIGNATURE_HEADER].lower()
        expected = signature_of(self.hmac_secret, headers[TIMESTAMP_HEADER], body)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise WebhookRefused("bad signature")
        return VerifiedDelivery(headers.get(DELIVERY_HEADER), signature[len("sha256=") :])
