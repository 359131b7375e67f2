"""Who may send notifications: the shop's backend, holding ``NOTIFICATIONS_API_KEY``, an identity
of its own (not a customer's token, an agent's or the admin's ``RASA_AUTH_TOKEN``). No Sanic, no
Rasa: validators on data.

The key travels only in an ``Authorization: Bearer`` header, compared in constant time.
"""

from __future__ import annotations

import hmac
import re
from typing import Optional

#: Idempotency keys: what backends use (UUIDs, order ids with a suffix), bounded.
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_.:\-]{8,128}")


def is_backend(authorization: Optional[str], api_key: str) -> bool:
    """Whether ``Authorization`` carries the notifications API key."""
    scheme, _, given = (authorization or "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given or not api_key:
        return False
    return hmac.compare_digest(given.encode(), api_key.encode())


def idempotency_problem(key: Optional[str]) -> Optional[str]:
    """Why an ``Idempotency-Key`` header is unusable, or None."""
    if not key:
        return "an Idempotency-Key header is required (backends retry)"
    if not IDEMPOTENCY_KEY.fullmatch(key):
        return "Idempotency-Key must be 8-128 characters of A-Z a-z 0-9 _ . : -"
    return None
