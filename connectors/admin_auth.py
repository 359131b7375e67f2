"""The admin identity: whoever holds the Rasa auth token (``RASA_AUTH_TOKEN``), the same secret
that guards Rasa's own HTTP API and its trackers. The conversation viewer, the insight page and
erasure accept it and nothing else (customers' and agents' credentials are other identities).
No Sanic, no Rasa.

The token travels only in an ``Authorization: Bearer`` header (the page keeps it in
sessionStorage), never in a URL, so it stays out of access logs, proxies and browser history.
"""

from __future__ import annotations

import hmac
from typing import Optional


def bearer_token(authorization: Optional[str]) -> Optional[str]:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def is_authorised(authorization: Optional[str], auth_token: str) -> bool:
    """Whether the header carries ``auth_token``, compared in constant time."""
    given = bearer_token(authorization)
    return given is not None and hmac.compare_digest(given.encode(), auth_token.encode())


#: The actor audit entries name for a request made with the admin token.
ADMIN = "admin"
