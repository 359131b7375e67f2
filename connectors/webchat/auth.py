"""Who a web chat client is: its token checked, the anonymous tokens this server issues.

Works on a token string, not on a request: the socket's first frame carries the token (so it never
lands in access logs or browser history), and tests build tokens and check them directly.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import jwt

from connectors.webchat.wire import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from omnichannel.channels import WEBCHAT
from omnichannel.errors import ConfigError
from omnichannel.identity import (
    Address,
    InvalidAddress,
    anon_address,
    phone_address,
    user_address,
)

logger = logging.getLogger(__name__)

ANON_AUDIENCE = "omni-webchat-anonymous"
JWT_ALGORITHM = "HS256"
#: RFC 7518 3.2: an HS256 key MUST be at least as long as the hash (32 bytes); a shorter one can
#: be brute-forced offline from any token, and then any user's conversation signed into.
JWT_SECRET_MIN_BYTES = 32
#: How long an anonymous session token lasts unless the channel's options say otherwise.
ANONYMOUS_TOKEN_LIFETIME = 30 * 24 * 3600
#: The furthest ahead a token's ``exp`` may lie (option ``max_token_lifetime``).
MAX_TOKEN_LIFETIME = 30 * 24 * 3600
DEMO_USER = "demo-customer"
DEMO_PHONE = "+14155552671"


class AuthRefused(Exception):
    """The socket must be closed: ``code`` is the close code, ``reason`` the close reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class ChatIdentity:
    """Who the token says the client is, and the addresses its conversation may be joined by."""

    address: Address
    link_to: Tuple[Address, ...] = ()
    #: The token's ``exp`` (Unix seconds); not part of who the client is.
    expires_at: float = field(default=0.0, compare=False)
    anonymous: bool = False


class TokenVerifier:
    """Checks chat tokens and issues anonymous ones.

    Host-site tokens: HS256 with ``WEBCHAT_JWT_SECRET``, ``exp`` and ``sub`` required; ``sub``
    gives ``user:<sub>``; ``phone_number`` with ``phone_number_verified: true`` (OIDC claims)
    joins the user to that phone's conversation. Anonymous tokens are minted here with audience
    ``omni-webchat-anonymous`` and an unguessable ``anon_id``, so neither kind passes for the
    other.

    The secret is checked here, once: a key too short to sign with refuses to start the channel.
    """

    def __init__(
        self,
        secret: str,
        allow_anonymous: bool,
        *,
        audience: Optional[str] = None,
        anonymous_lifetime: int = ANONYMOUS_TOKEN_LIFETIME,
        max_lifetime: int = MAX_TOKEN_LIFETIME,
    ) -> None:
        if len(secret.encode("utf-8")) < JWT_SECRET_MIN_BYTES:
            raise ConfigError(
                f"WEBCHAT_JWT_SECRET must be at least {JWT_SECRET_MIN_BYTES} bytes "
                "(HS256 keys shorter than the hash can be guessed from any token)"
            )
        self._secret = secret
        self.allow_anonymous = allow_anonymous
        self._audience = audience
        self._anonymous_lifetime = anonymous_lifetime
        self._max_lifetime = max_lifetime

    def verify(self, token: str) -> ChatIdentity:
        """The identity of a token; AuthRefused (with a close code and reason) otherwise."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, "token is not a JWT") from None
        if unverified.get("aud") == ANON_AUDIENCE:
            return self._verify_anonymous(token)
        claims = self._decode(
            token,
            audience=self._audience,
            options={"require": ["exp", "sub"], "verify_aud": self._audience is not None},
        )
        expires_at = self._checked_expiry(claims)
        try:
            address = user_address(str(claims["sub"]))
        except InvalidAddress as error:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, f"token subject: {error}") from None
        phone = claims.get("phone_number")
        if phone and claims.get("phone_number_verified") is True:
            try:
                return ChatIdentity(address, (phone_address(str(phone)),), expires_at)
            except InvalidAddress as error:
                logger.warning("chat token of %s: phone not linked: %s", address.masked(), error)
        return ChatIdentity(address, expires_at=expires_at)

    def _checked_expiry(self, claims: Dict[str, Any]) -> float:
        """The token's expiry, refused when it lies further ahead than the maximum lifetime
        (a token valid until 2300 is a leaked key's dream)."""
        expires_at = float(claims["exp"])
        if expires_at - time.time() > self._max_lifetime:
            raise AuthRefused(
                CLOSE_UNAUTHENTICATED,
                f"token lifetime exceeds the maximum of {self._max_lifetime} s",
            )
        return expires_at

    def _verify_anonymous(self, token: str) -> ChatIdentity:
        if not self.allow_anonymous:
            raise AuthRefused(CLOSE_FORBIDDEN, "anonymous chat is disabled")
        claims = self._decode(
            token, audience=ANON_AUDIENCE, options={"require": ["exp", "anon_id"]}
        )
        expires_at = self._checked_expiry(claims)
        try:
            return ChatIdentity(
                anon_address(str(claims["anon_id"])), expires_at=expires_at, anonymous=True
            )
        except InvalidAddress as error:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, f"anonymous token: {error}") from None

    def _decode(self, token: str, **kwargs: Any) -> Dict[str, Any]:
        try:
            return jwt.decode(token, self._secret, algorithms=[JWT_ALGORITHM], **kwargs)
        except jwt.ExpiredSignatureError:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, "token expired") from None
        except jwt.InvalidSignatureError:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, "token signature is invalid") from None
        except jwt.MissingRequiredClaimError as error:
            raise AuthRefused(
                CLOSE_UNAUTHENTICATED, f"token lacks the {error.claim!r} claim"
            ) from None
        except jwt.PyJWTError as error:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, f"token rejected: {error}"[:120]) from None

    def issue_anonymous(self) -> Tuple[str, int]:
        """A fresh anonymous session token and its expiry (Unix seconds)."""
        expires_at = int(time.time()) + int(self._anonymous_lifetime)
        claims = {
            "aud": ANON_AUDIENCE,
            "anon_id": secrets.token_urlsafe(18),
            "iat": int(time.time()),
            "exp": expires_at,
        }
        return jwt.encode(claims, self._secret, algorithm=JWT_ALGORITHM), expires_at


def demo_chat_url(base_url: str, jwt_secret: str, lifetime: int = 7 * 24 * 3600) -> str:
    """A link that opens the widget signed in as the demo customer, whose verified phone
    (+1 415 555 2671, the simulators' default) joins the chat to that phone's conversation.

    The token rides in the URL fragment, which browsers never send to the server.
    """
    now = int(time.time())
    token = jwt.encode(
        {
            "sub": DEMO_USER,
            "name": "Demo customer",
            "phone_number": DEMO_PHONE,
            "phone_number_verified": True,
            "iat": now,
            "exp": now + lifetime,
        },
        jwt_secret,
        algorithm=JWT_ALGORITHM,
    )
    return f"{base_url.rstrip('/')}/webhooks/{WEBCHAT}/#token={token}"
