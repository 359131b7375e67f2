"""Who a web chat client is: its token checked, the anonymous tokens this server issues.

Works on a token string, not on a request: the socket's first frame carries the token (so it never
lands in access logs or browser history), and tests build tokens and check them directly.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Optional, Tuple

import jwt

from connectors.webchat.wire import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED
from omnichannel.addresses import Address, InvalidAddress, anon_address, phone_address, user_address
from omnichannel.channels import WEBCHAT
from omnichannel.customer_tokens import (
    JWT_ALGORITHM,
    MAX_TOKEN_LIFETIME,
    HostTokenPolicy,
    TokenRefused,
    checked_expiry,
    decode,
)

logger = logging.getLogger(__name__)

ANON_AUDIENCE = "omni-webchat-anonymous"
#: How long an anonymous session token lasts unless the channel's options say otherwise.
ANONYMOUS_TOKEN_LIFETIME = 30 * 24 * 3600
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

    Host-site tokens are checked by :class:`~omnichannel.customer_tokens.HostTokenPolicy`, as
    a VAPI web call's are; its secret check makes a key too short to sign with refuse to start
    the channel.
    """

    def __init__(
        self,
        secret: str,
        allow_anonymous: bool,
        *,
        audience: Optional[str] = None,
        anonymous_lifetime: int = ANONYMOUS_TOKEN_LIFETIME,
        max_lifetime: int = MAX_TOKEN_LIFETIME,
        other_audiences: Tuple[str, ...] = (),
    ) -> None:
        self._host_tokens = HostTokenPolicy(secret, audience, max_lifetime)
        self._secret = secret
        self.allow_anonymous = allow_anonymous
        self._anonymous_lifetime = anonymous_lifetime
        self._max_lifetime = max_lifetime
        #: Audiences of other identities' tokens (agents'), refused whatever their signature.
        self._other_audiences = frozenset(other_audiences)

    def verify(self, token: str) -> ChatIdentity:
        """The identity of a token; AuthRefused (with a close code and reason) otherwise."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, "token is not a JWT") from None
        audiences = unverified.get("aud")
        audiences = set(audiences) if isinstance(audiences, list) else {audiences}
        if audiences & self._other_audiences:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, "not a chat token")
        if unverified.get("aud") == ANON_AUDIENCE:
            return self._verify_anonymous(token)
        try:
            claims = self._host_tokens.claims(token)
        except TokenRefused as refused:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, refused.reason) from None
        expires_at = float(claims["exp"])
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

    def _verify_anonymous(self, token: str) -> ChatIdentity:
        if not self.allow_anonymous:
            raise AuthRefused(CLOSE_FORBIDDEN, "anonymous chat is disabled")
        try:
            claims = decode(
                self._secret,
                token,
                audience=ANON_AUDIENCE,
                options={"require": ["exp", "anon_id"]},
            )
            expires_at = checked_expiry(claims, self._max_lifetime)
        except TokenRefused as refused:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, refused.reason) from None
        try:
            return ChatIdentity(
                anon_address(str(claims["anon_id"])), expires_at=expires_at, anonymous=True
            )
        except InvalidAddress as error:
            raise AuthRefused(CLOSE_UNAUTHENTICATED, f"anonymous token: {error}") from None

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
