"""Who an agent is: a token the host's single sign-on signs, checked here. No Sanic, no Rasa.

Agents' tokens are JWTs signed with HS256 and ``INBOX_JWT_SECRET``, carrying ``sub`` (the agent's
id, recorded with every claim, reply and note), ``exp``, ``aud`` = ``INBOX_JWT_AUDIENCE``
(``omni-inbox`` by default) and a display ``name`` (customers see it on the agent's replies).
They are a kind of identity of their own: the secret must differ from the web chat's
(``WEBCHAT_JWT_SECRET``: customers' tokens) and from ``RASA_AUTH_TOKEN`` (operators), the
audience is required, and the web chat refuses a token with the inbox's audience, so no route
takes one kind for another.

Tokens travel in an ``Authorization: Bearer`` header (and in the first frame of the inbox's
socket), never in a URL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

import jwt

from omnichannel.errors import ConfigError
from omnichannel.handoff.state import MAX_NAME_CHARS, Actor
from omnichannel.settings import Settings

JWT_ALGORITHM = "HS256"
#: RFC 7518 3.2: an HS256 key is at least as long as the hash.
SECRET_MIN_BYTES = 32
#: The furthest ahead an agent token's ``exp`` may lie (a working day and then some).
MAX_TOKEN_LIFETIME = 24 * 3600


class AgentRefused(Exception):
    """Not a valid agent token; the message is safe to answer with (401)."""


@dataclass(frozen=True)
class SignedInAgent:
    """An agent as their token names them, until ``expires_at`` (Unix seconds)."""

    actor: Actor
    expires_at: float


def bearer_token(authorization: Optional[str]) -> Optional[str]:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class AgentVerifier:
    """Checks agents' tokens (see the module docstring)."""

    def __init__(self, secret: str, audience: str, max_lifetime: int = MAX_TOKEN_LIFETIME) -> None:
        if len(secret.encode("utf-8")) < SECRET_MIN_BYTES:
            raise ConfigError(f"INBOX_JWT_SECRET must be at least {SECRET_MIN_BYTES} bytes")
        self._secret = secret
        self.audience = audience
        self.max_lifetime = max_lifetime

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentVerifier:
        settings.require("INBOX_JWT_SECRET")
        secret = settings.inbox_jwt_secret or ""
        others = {
            "WEBCHAT_JWT_SECRET": settings.webchat_jwt_secret,
            "RASA_AUTH_TOKEN": settings.rasa_auth_token,
        }
        for name, value in others.items():
            if value and value == secret:
                raise ConfigError(
                    f"INBOX_JWT_SECRET must differ from {name}: agents, customers and "
                    "operators are separate identities"
                )
        return cls(secret, settings.inbox_jwt_audience)

    def verify(self, token: Optional[str]) -> SignedInAgent:
        """The agent a token names; AgentRefused otherwise."""
        if not token:
            raise AgentRefused("send an agent token as a Bearer token")
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[JWT_ALGORITHM],
                audience=self.audience,
                options={"require": ["exp", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise AgentRefused("agent token expired") from None
        except jwt.InvalidAudienceError:
            raise AgentRefused("not an agent token (wrong audience)") from None
        except jwt.InvalidSignatureError:
            raise AgentRefused("agent token signature is invalid") from None
        except jwt.MissingRequiredClaimError as error:
            raise AgentRefused(f"agent token lacks the {error.claim!r} claim") from None
        except jwt.PyJWTError:
            raise AgentRefused("not a valid agent token") from None
        if float(claims["exp"]) - time.time() > self.max_lifetime:
            raise AgentRefused(f"agent token lifetime exceeds {self.max_lifetime} s")
        agent_id = str(claims["sub"]).strip()
        if not agent_id:
            raise AgentRefused("agent token has an empty subject")
        name = str(claims.get("name") or claims.get("preferred_username") or agent_id).strip()
        return SignedInAgent(Actor.agent(agent_id, name[:MAX_NAME_CHARS]), float(claims["exp"]))


def agent_token(
    secret: str,
    agent_id: str,
    name: str,
    *,
    audience: str,
    lifetime: int = 8 * 3600,
    **claims: Any,
) -> str:
    """An agent token as the host's SSO would sign it: for `make run`'s local sign-in, the
    simulators and tests."""
    now = int(time.time())
    body: Dict[str, Any] = {
        "sub": agent_id,
        "name": name,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime,
        **claims,
    }
    return jwt.encode(body, secret, algorithm=JWT_ALGORITHM)
