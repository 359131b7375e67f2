"""Who may call the VAPI endpoints: validators on a request's headers and body, not on a request.

VAPI authenticates in several ways, depending on how its dashboard was set up
(docs/specs/vapi.md, "server-authentication"): the server secret as ``X-Vapi-Secret``,
``X-Vapi-Signature`` or a Bearer token; a custom-LLM credential's Bearer key, with or without the
``Bearer`` prefix; or its HMAC credential, a hex HMAC-SHA256 over ``"{timestamp}.{body}"`` with a
fresh timestamp. Every comparison is constant-time. Headers are any mapping (Sanic's, a dict):
names are matched case-insensitively.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from typing import Mapping, Optional

#: HMAC-signed server messages older (or newer) than this are replays.
SIGNATURE_TOLERANCE_SECONDS = 300


def _header(headers: Mapping[str, str], name: str) -> Optional[str]:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _bearer(header: Optional[str]) -> Optional[str]:
    """The token of an Authorization header, with or without the "Bearer " prefix."""
    value = (header or "").strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


def _equal(candidate: Optional[str], secret: Optional[str]) -> bool:
    if not candidate or not secret:
        return False
    return hmac.compare_digest(candidate.encode("utf-8"), secret.encode("utf-8"))


def _fresh(headers: Mapping[str, str], now: float) -> bool:
    """``x-timestamp`` (seconds or milliseconds since the epoch) within the tolerance of now."""
    timestamp = (_header(headers, "x-timestamp") or "").strip()
    try:
        stamp = float(timestamp)
    except ValueError:
        return False
    if not math.isfinite(stamp):
        # NaN compares false with everything: it would slip through the tolerance check.
        return False
    seconds = stamp / 1000 if stamp > 1e11 else stamp
    return abs(now - seconds) <= SIGNATURE_TOLERANCE_SECONDS


class VapiAuth:
    """The checks of one deployment's secrets (``VAPI_SERVER_SECRET``, ``VAPI_CUSTOM_LLM_KEY``)."""

    def __init__(self, server_secret: Optional[str], custom_llm_key: Optional[str] = None) -> None:
        self.server_secret = server_secret
        self.custom_llm_key = custom_llm_key

    def check_shared_secret(self, headers: Mapping[str, str]) -> bool:
        """The server secret as a Bearer token, ``X-Vapi-Secret`` or ``X-Vapi-Signature``."""
        candidates = (
            _bearer(_header(headers, "authorization")),
            _header(headers, "x-vapi-secret"),
            _header(headers, "x-vapi-signature"),
        )
        return any(_equal(candidate, self.server_secret) for candidate in candidates)

    def check_custom_llm(self, headers: Mapping[str, str]) -> bool:
        """A custom-LLM request: the custom-LLM key as Bearer, or the server secret."""
        if _equal(_bearer(_header(headers, "authorization")), self.custom_llm_key):
            return True
        return self.check_shared_secret(headers)

    def check_server_message(self, headers: Mapping[str, str], body: bytes, now: float) -> bool:
        """A server message: the server secret, or VAPI's HMAC signature of ``body``."""
        return self.check_shared_secret(headers) or self.check_signature(headers, body, now)

    def may_authenticate_server_message(self, headers: Mapping[str, str], now: float) -> bool:
        """Whether the headers alone leave a server message a chance: the server secret, or a
        signature with a fresh timestamp (whose HMAC needs the body). Checked before the body
        is read, so a sender with neither is refused without it."""
        if self.check_shared_secret(headers):
            return True
        signature = (_header(headers, "x-signature") or "").strip()
        return bool(signature and self.server_secret and _fresh(headers, now))

    def check_signature(self, headers: Mapping[str, str], body: bytes, now: float) -> bool:
        """VAPI's HMAC credential: hex HMAC-SHA256 over "{timestamp}.{body}", fresh timestamp
        (seconds or milliseconds since the epoch)."""
        signature = (_header(headers, "x-signature") or "").strip()
        timestamp = (_header(headers, "x-timestamp") or "").strip()
        if not signature or not self.server_secret or not _fresh(headers, now):
            return False
        if signature.lower().startswith("sha256="):
            signature = signature[7:]
        expected = hmac.new(
            self.server_secret.encode("utf-8"),
            timestamp.encode("utf-8") + b"." + body,
            hashlib.sha256,
        ).hexdigest()
        return hmac.compare_digest(signature.lower().encode(), expected.encode())
