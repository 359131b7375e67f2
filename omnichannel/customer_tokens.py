"""The host site's customer tokens, checked one way by every channel that takes one.

A signed-in customer carries a JWT the host site signs with ``WEBCHAT_JWT_SECRET`` (HS256): the
web chat takes it in its first frame, a VAPI web call in its ``user_token`` variable. Both ask
the same of it through :class:`HostTokenPolicy`: a valid signature, ``sub`` and ``exp`` present,
not expired, an ``exp`` no further ahead than the policy's maximum lifetime (a token valid for
ten years is what a leaked signing key mints), and, when the channel names one, the audience.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

import jwt

from omnichannel.errors import ConfigError

JWT_ALGORITHM = "HS256"
#: RFC 7518 3.2: an HS256 key MUST be at least as long as the hash (32 bytes); a shorter one can
#: be brute-forced offline from any token, and then any user's conversation signed into.
JWT_SECRET_MIN_BYTES = 32
#: The furthest ahead a token's ``exp`` may lie unless a channel's options say otherwise.
MAX_TOKEN_LIFETIME = 30 * 24 * 3600


class TokenRefused(Exception):
    """The token does not sign anyone in; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_secret(secret: str) -> None:
    """ConfigError for a signing key too short to be safe."""
    if len(secret.encode("utf-8")) < JWT_SECRET_MIN_BYTES:
        raise ConfigError(
            f"WEBCHAT_JWT_SECRET must be at least {JWT_SECRET_MIN_BYTES} bytes "
            "(HS256 keys shorter than the hash can be guessed from any token)"
        )


def decode(secret: str, token: str, **kwargs: Any) -> Dict[str, Any]:
    """The claims of an HS256 token signed with ``secret``; TokenRefused otherwise."""
    try:
        return jwt.decode(token, secret, algorithms=[JWT_ALGORITHM], **kwargs)
    except jwt.ExpiredSignatureError:
        raise TokenRefused("token expired") from None
    except jwt.InvalidSignatureError:
        raise TokenRefused("token signature is invalid") from None
    except jwt.MissingRequiredClaimError as error:
        raise TokenRefused(f"token lacks the {error.claim!r} claim") from None
    except jwt.PyJWTError as error:
        raise TokenRefused(f"token rejected: {error}"[:120]) from None


def checked_expiry(claims: Dict[str, Any], max_lifetime: int, now: Optional[float] = None) -> float:
    """The token's ``exp``, refused when it lies further ahead than ``max_lifetime``."""
    expires_at = float(claims["exp"])
    if expires_at - (time.time() if now is None else now) > max_lifetime:
        raise TokenRefused(f"token lifetime exceeds the maximum of {max_lifetime} s")
    return expires_at


@dataclass(frozen=True)
class HostTokenPolicy:
    """What a host-site token must be to sign a customer in (see the module docstring)."""

    secret: str
    audience: Optional[str] = None
    max_lifetime: int = MAX_TOKEN_LIFETIME

    def __post_init__(self) -> None:
        check_secret(self.secret)

    def claims(self, token: str) -> Dict[str, Any]:
        """The token's claims (``sub`` and ``exp`` among them); TokenRefused otherwise."""
        claims = decode(
            self.secret,
            token,
            audience=self.audience,
            options={"require": ["exp", "sub"], "verify_aud": self.audience is not None},
        )
        checked_expiry(claims, self.max_lifetime)
        return claims
