"""Agents' tokens (connectors/inbox/auth.py): only the inbox's own kind passes."""

from __future__ import annotations

import time

import jwt
import pytest

from connectors.inbox.auth import AgentRefused, AgentVerifier, agent_token, bearer_token
from omnichannel.errors import ConfigError
from omnichannel.settings import Settings

pytestmark = pytest.mark.unit

SECRET = "s" * 40
VERIFIER = AgentVerifier(SECRET, "omni-inbox")


def test_a_token_the_sso_signed_names_the_agent() -> None:
    signed_in = VERIFIER.verify(agent_token(SECRET, "a-17", "Dana Scully", audience="omni-inbox"))
    assert signed_in.actor.as_dict() == {"kind": "agent", "id": "a-17", "name": "Dana Scully"}
    assert signed_in.expires_at > time.time()


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "send an agent token"),
        ("not-a-jwt", "not a valid agent token"),
        (agent_token("x" * 40, "a", "A", audience="omni-inbox"), "signature is invalid"),
        (agent_token(SECRET, "a", "A", audience="omni-inbox", lifetime=-10), "expired"),
        (agent_token(SECRET, "a", "A", audience="omni-webchat"), "wrong audience"),
        (agent_token(SECRET, "a", "A", audience="omni-inbox", lifetime=10 * 86400), "lifetime"),
        # A customer's chat token: no audience at all.
        (jwt.encode({"sub": "u1", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"), "aud"),
        (jwt.encode({"sub": "a", "aud": "omni-inbox"}, SECRET, algorithm="HS256"), "exp"),
        (
            jwt.encode(
                {"sub": "a", "aud": "omni-inbox", "exp": int(time.time()) + 60},
                SECRET,
                algorithm="HS512",
            ),
            "not a valid agent token",
        ),
    ],
    ids=[
        "none",
        "garbage",
        "forged",
        "expired",
        "customer-audience",
        "too-long",
        "no-aud",
        "no-exp",
        "other-algorithm",
    ],
)
def test_everything_else_is_refused(token, reason) -> None:
    with pytest.raises(AgentRefused, match=reason):
        VERIFIER.verify(token)


def test_the_secret_is_an_identity_of_its_own() -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        AgentVerifier("short", "omni-inbox")
    for other in ("WEBCHAT_JWT_SECRET", "RASA_AUTH_TOKEN"):
        with pytest.raises(ConfigError, match=f"must differ from {other}"):
            AgentVerifier.from_settings(
                Settings.from_env({"INBOX_JWT_SECRET": SECRET, other: SECRET})
            )
    with pytest.raises(ConfigError, match="INBOX_JWT_SECRET"):
        AgentVerifier.from_settings(Settings.from_env({}))


def test_bearer_header() -> None:
    assert bearer_token("Bearer abc") == "abc" and bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token(None) is None
