"""The ``chatwoot`` channel's options: its section of credentials.yml.

The connection and the secrets are written as ``${ENV}`` references (Rasa expands them when it
reads the file), so credentials.yml names them and the environment holds them::

    connectors.chatwoot.channel.ChatwootInput:
      url: ${CHATWOOT_URL}
      account_id: ${CHATWOOT_ACCOUNT_ID}
      inbox_id: ${CHATWOOT_INBOX_ID}
      api_access_token: ${CHATWOOT_API_ACCESS_TOKEN}
      webhook_secret: ${CHATWOOT_WEBHOOK_SECRET}      # Chatwoot >= 4.13: the inbox's secret
      # webhook_url_secret: ${CHATWOOT_WEBHOOK_URL_SECRET}   # older Chatwoot: a secret URL

Everything else has a default (below). docs/SUPPORT.md, "Chatwoot setup step by step", says
where each value comes from.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from pydantic import AnyHttpUrl, Field, SecretStr, root_validator, validator

from omnichannel.options import ConnectorOptions

SECTION = "connectors.chatwoot.channel.ChatwootInput"
#: A secret URL path segment must be at least this long (it is the only check on old Chatwoot).
MIN_URL_SECRET_CHARS = 32
HAND_BACK = "hand_back"
RESOLVE = "resolve"


class ChatwootOptions(ConnectorOptions):
    """See the module docstring; each field's comment says what it is for."""

    #: Chatwoot's base URL (https://chatwoot.example.com).
    url: AnyHttpUrl
    #: The account (the number after /app/accounts/ in Chatwoot's URLs).
    account_id: int = Field(ge=1)
    #: The API inbox hand-offs are mirrored into (Settings → Inboxes → the inbox's id).
    inbox_id: int = Field(ge=1)
    #: An agent's or administrator's access token (Profile settings → Access token); an agent
    #: bot's token cannot create contacts.
    api_access_token: SecretStr
    #: The HMAC secret of the webhook (Chatwoot >= 4.13: the API inbox's secret; >= 4.11.2: an
    #: account webhook's). Requests must then carry a valid X-Chatwoot-Signature.
    webhook_secret: Optional[SecretStr] = None
    #: For Chatwoot that does not sign: the webhook URL ends with this secret
    #: (/webhooks/chatwoot/webhook/<secret>), at least 32 characters.
    webhook_url_secret: Optional[SecretStr] = None
    #: A signed request older than this is refused (a replay).
    webhook_max_age_seconds: int = Field(default=300, ge=30, le=3600)
    #: Largest webhook body accepted (a message event carries its conversation).
    max_body_bytes: int = Field(default=1_000_000, ge=10_000, le=10_000_000)
    #: What resolving the conversation in Chatwoot does: hand_back (the customer is told the
    #: assistant is back) or resolve (nothing is said; the assistant answers their next message).
    on_resolve: str = HAND_BACK
    #: Give Chatwoot the customer's phone number (E.164) on their contact and unmasked in the
    #: transcript. Off: masked, as in the embedded inbox (agents answer through the channels).
    share_phone_number: bool = False
    #: Messages before the hand-off mirrored into a new Chatwoot conversation.
    transcript_messages: int = Field(default=30, ge=0, le=200)
    #: Each call to Chatwoot's API must answer within this.
    request_timeout_seconds: float = Field(default=5.0, gt=0, le=30)
    #: One sync of a conversation stops starting new calls after this (it continues in the next
    #: one); kept well inside the hand-off engine's 30 s per-conversation sync lock.
    sync_budget_seconds: float = Field(default=12.0, gt=0, le=20)
    #: Retries of a failed sync wait base × 2^(attempt-1) seconds, at most max.
    retry_base_seconds: float = Field(default=2.0, ge=0, le=60)
    retry_max_seconds: float = Field(default=300.0, ge=1, le=3600)

    @validator("on_resolve")
    def _known_resolve(cls, value: str) -> str:  # noqa: N805 - pydantic validator
        if value not in (HAND_BACK, RESOLVE):
            raise ValueError(f"must be {HAND_BACK} or {RESOLVE}")
        return value

    @validator("webhook_url_secret")
    def _long_url_secret(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:  # noqa: N805
        if value is not None and len(value.get_secret_value()) < MIN_URL_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_URL_SECRET_CHARS} characters")
        return value

    @validator("api_access_token", "webhook_secret")
    def _not_blank(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:  # noqa: N805
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty")
        return value

    @root_validator(skip_on_failure=True)
    def _webhook_checked(cls, values: Dict[str, Any]) -> Dict[str, Any]:  # noqa: N805
        if values.get("webhook_secret") is None and values.get("webhook_url_secret") is None:
            raise ValueError(
                "set webhook_secret (Chatwoot >= 4.13 signs its webhooks) or webhook_url_secret "
                "(a secret webhook URL, for Chatwoot that does not sign): the webhook must check "
                "its caller"
            )
        return values

    def secret(self, name: str) -> Optional[str]:
        value = getattr(self, name)
        return value.get_secret_value() if value is not None else None
