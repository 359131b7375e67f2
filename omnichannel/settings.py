"""All configuration in one typed place, read from the environment.

Every part (connectors, stores, actions, simulators) reads its settings here, so a missing
secret is reported once, at start-up, with the variable's name, instead of as a 500 on the
first webhook. The names are fixed by docs/DESIGN.md's table of environment variables.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Tuple

from omnichannel.errors import ConfigError
from omnichannel.handoff.hours import BusinessHours
from omnichannel.handoff.policy import (
    DEFAULT_GIVE_UP_SECONDS,
    DEFAULT_WAIT_NOTICE_SECONDS,
    WaitingBounds,
)
from omnichannel.redis_config import LOCAL_REDIS_URL, RedisConfig

LOCAL_BASE_URL = "http://127.0.0.1:5005"
#: More proxies than this in front of one server is a misconfiguration.
MAX_PROXY_HOPS = 10
#: Turns one process runs through Rasa at once (connectors/turns/slots.py).
DEFAULT_CONCURRENT_TURNS = 8
MAX_CONCURRENT_TURNS_LIMIT = 1000


def _flag(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _positive(name: str, value: Optional[str], default: float, unit: float) -> float:
    """``value`` (a number of ``unit``-second units) in seconds; ``default`` when unset."""
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not number > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return number * unit


#: VAPI transfer modes a hand-off on a call may use (docs/specs/vapi-outbound-and-transfer.md;
#: the names checked against VAPI's current TransferPlan.mode enum and its warm-transfer guide,
#: https://docs.vapi.ai/tools/transfer-call/warm-transfer: "warm-transfer-with-summary" is the
#: legacy name): the summary modes brief the person who answers; the warm ones need Twilio
#: telephony, SIP lines get the summary in a header. The default waits for a person to speak
#: before the summary, so a voicemail never gets it.
TRANSFER_MODES = (
    "warm-transfer-wait-for-operator-to-speak-first-and-then-say-summary",
    "warm-transfer-say-summary",
    "blind-transfer-add-summary-to-sip-header",
    "blind-transfer",
)

#: The audience agents' inbox tokens must carry unless INBOX_JWT_AUDIENCE names another.
DEFAULT_INBOX_AUDIENCE = "omni-inbox"


@dataclass(frozen=True)
class Settings:
    redis_url: str
    #: REDIS_URL read with the other REDIS_* variables (omnichannel.redis_config).
    redis: RedisConfig
    public_base_url: str
    rasa_auth_token: Optional[str]
    twilio_account_sid: Optional[str]
    twilio_auth_token: Optional[str]
    twilio_phone_number: Optional[str]
    twilio_messaging_service_sid: Optional[str]
    twilio_api_base_url: Optional[str]
    #: Proxies in front of this server whose X-Forwarded-For entries are believed (0: none).
    trusted_proxy_hops: int
    vapi_server_secret: Optional[str]
    vapi_custom_llm_key: Optional[str]
    webchat_jwt_secret: Optional[str]
    webchat_allow_anonymous: bool
    openai_api_key: Optional[str]
    openai_base_url: Optional[str]
    llm_model: str
    default_phone_region: str
    #: Where "talk to a person" transfers a phone call (E.164); None: no transfer: the
    #: hand-off is queued for the team, who answer by text.
    handoff_phone_number: Optional[str] = None
    #: How a call is put through to that number (one of TRANSFER_MODES).
    handoff_transfer_mode: str = TRANSFER_MODES[0]
    #: The support team's hours and how long a hand-off may wait in them (HANDOFF_TIMEZONE,
    #: HANDOFF_HOURS, HANDOFF_HOLIDAYS, HANDOFF_WAIT_NOTICE_MINUTES, HANDOFF_GIVE_UP_HOURS).
    handoff_waiting: WaitingBounds = field(
        default_factory=lambda: WaitingBounds(BusinessHours.parse())
    )
    #: HS256 key of agents' inbox tokens (signed by the host's SSO); None: no inbox.
    inbox_jwt_secret: Optional[str] = None
    inbox_jwt_audience: str = DEFAULT_INBOX_AUDIENCE
    #: Turns one process runs through Rasa at once; the others wait in arrival order.
    max_concurrent_turns: int = DEFAULT_CONCURRENT_TURNS
    #: Our WhatsApp sender (``whatsapp:+1…``) for messages to a customer who has not written to
    #: a sender of ours lately; None: ``TWILIO_PHONE_NUMBER`` on WhatsApp.
    twilio_whatsapp_number: Optional[str] = None
    #: VAPI's REST API, for calls we place (callbacks): the org's private API key, the imported
    #: phone number calls go out from, and the saved assistant that takes them (None: the same
    #: transient assistant ``assistant-request`` answers with). Callbacks are offered only when
    #: the key and the phone number id are set (:attr:`places_calls`).
    vapi_api_key: Optional[str] = None
    vapi_phone_number_id: Optional[str] = None
    vapi_assistant_id: Optional[str] = None
    #: Another base URL for VAPI's REST API (the local fake); None: https://api.vapi.ai.
    vapi_api_base_url: Optional[str] = None
    #: The shop's backend's key for the notifications API (its own identity).
    notifications_api_key: Optional[str] = None

    @property
    def places_calls(self) -> bool:
        """True when this deployment can place outbound calls through VAPI."""
        return bool(self.vapi_api_key and self.vapi_phone_number_id)

    @property
    def whatsapp_sender(self) -> Optional[str]:
        """The WhatsApp sender business-initiated messages go from."""
        if self.twilio_whatsapp_number:
            return self.twilio_whatsapp_number
        return f"whatsapp:{self.twilio_phone_number}" if self.twilio_phone_number else None

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> Settings:
        env = os.environ if env is None else env

        def get(name: str) -> Optional[str]:
            value = env.get(name)
            return value.strip() if value and value.strip() else None

        public_base_url = (get("PUBLIC_BASE_URL") or LOCAL_BASE_URL).rstrip("/")
        if not public_base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"PUBLIC_BASE_URL must start with http:// or https://, got {public_base_url!r}"
            )
        redis_url = get("REDIS_URL") or LOCAL_REDIS_URL
        redis = RedisConfig.from_url(
            redis_url, {name: value for name in _REDIS_VARIABLES if (value := get(name))}
        )
        handoff = get("HANDOFF_PHONE_NUMBER")
        if handoff and not re.fullmatch(r"\+[1-9]\d{6,14}", handoff):
            raise ConfigError(
                f"HANDOFF_PHONE_NUMBER must be an E.164 number (+ and 7-15 digits), got {handoff!r}"
            )
        whatsapp = get("TWILIO_WHATSAPP_NUMBER")
        if whatsapp and not re.fullmatch(r"(?:whatsapp:)?\+[1-9]\d{6,14}", whatsapp):
            raise ConfigError(
                "TWILIO_WHATSAPP_NUMBER must be an E.164 number, optionally prefixed "
                f"whatsapp:, got {whatsapp!r}"
            )
        if whatsapp and not whatsapp.startswith("whatsapp:"):
            whatsapp = "whatsapp:" + whatsapp
        if _flag(get("TRUST_PROXY_HEADERS")):
            raise ConfigError(
                "TRUST_PROXY_HEADERS is replaced by TRUSTED_PROXY_HOPS, the number of proxies in "
                "front of this server that set X-Forwarded-For (1 behind one load balancer); the "
                "URL Twilio signatures are checked against is always PUBLIC_BASE_URL now"
            )
        hops = get("TRUSTED_PROXY_HOPS") or "0"
        if not hops.isascii() or not hops.isdigit() or int(hops) > MAX_PROXY_HOPS:
            raise ConfigError(
                f"TRUSTED_PROXY_HOPS must be a number of proxies from 0 to {MAX_PROXY_HOPS}, "
                f"got {hops!r}"
            )
        transfer_mode = get("HANDOFF_TRANSFER_MODE") or TRANSFER_MODES[0]
        if transfer_mode not in TRANSFER_MODES:
            raise ConfigError(
                f"HANDOFF_TRANSFER_MODE must be one of {', '.join(TRANSFER_MODES)}, "
                f"got {transfer_mode!r}"
            )
        waiting = WaitingBounds(
            BusinessHours.parse(
                get("HANDOFF_TIMEZONE"), get("HANDOFF_HOURS"), get("HANDOFF_HOLIDAYS")
            ),
            notice_seconds=_positive(
                "HANDOFF_WAIT_NOTICE_MINUTES",
                get("HANDOFF_WAIT_NOTICE_MINUTES"),
                DEFAULT_WAIT_NOTICE_SECONDS,
                60,
            ),
            give_up_seconds=_positive(
                "HANDOFF_GIVE_UP_HOURS", get("HANDOFF_GIVE_UP_HOURS"), DEFAULT_GIVE_UP_SECONDS, 3600
            ),
        )
        turns = get("MAX_CONCURRENT_TURNS") or str(DEFAULT_CONCURRENT_TURNS)
        if (
            not turns.isascii()
            or not turns.isdigit()
            or not 1 <= int(turns) <= MAX_CONCURRENT_TURNS_LIMIT
        ):
            raise ConfigError(
                f"MAX_CONCURRENT_TURNS must be a number of turns from 1 to "
                f"{MAX_CONCURRENT_TURNS_LIMIT}, got {turns!r}"
            )
        region = (get("DEFAULT_PHONE_REGION") or "US").upper()
        if len(region) != 2 or not region.isalpha():
            raise ConfigError(
                f"DEFAULT_PHONE_REGION must be a two-letter region code, got {region!r}"
            )
        return cls(
            redis_url=redis_url,
            redis=redis,
            public_base_url=public_base_url,
            rasa_auth_token=get("RASA_AUTH_TOKEN"),
            twilio_account_sid=get("TWILIO_ACCOUNT_SID"),
            twilio_auth_token=get("TWILIO_AUTH_TOKEN"),
            twilio_phone_number=get("TWILIO_PHONE_NUMBER"),
            twilio_messaging_service_sid=get("TWILIO_MESSAGING_SERVICE_SID"),
            twilio_api_base_url=get("TWILIO_API_BASE_URL"),
            trusted_proxy_hops=int(hops),
            vapi_server_secret=get("VAPI_SERVER_SECRET"),
            vapi_custom_llm_key=get("VAPI_CUSTOM_LLM_KEY"),
            webchat_jwt_secret=get("WEBCHAT_JWT_SECRET"),
            webchat_allow_anonymous=_flag(get("WEBCHAT_ALLOW_ANONYMOUS")),
            openai_api_key=get("OPENAI_API_KEY"),
            openai_base_url=get("OPENAI_BASE_URL"),
            llm_model=get("LLM_MODEL") or "gpt-4o-mini",
            default_phone_region=region,
            handoff_phone_number=handoff,
            handoff_transfer_mode=transfer_mode,
            handoff_waiting=waiting,
            inbox_jwt_secret=get("INBOX_JWT_SECRET"),
            inbox_jwt_audience=get("INBOX_JWT_AUDIENCE") or DEFAULT_INBOX_AUDIENCE,
            max_concurrent_turns=int(turns),
            twilio_whatsapp_number=whatsapp,
            vapi_api_key=get("VAPI_API_KEY"),
            vapi_phone_number_id=get("VAPI_PHONE_NUMBER_ID"),
            vapi_assistant_id=get("VAPI_ASSISTANT_ID"),
            vapi_api_base_url=(get("VAPI_API_BASE_URL") or "").rstrip("/") or None,
            notifications_api_key=get("NOTIFICATIONS_API_KEY"),
        )

    def require(self, *names: str) -> None:
        """Fail start-up with the names of the environment variables a part needs but lacks."""
        missing = [name for name in names if not getattr(self, name.lower())]
        if missing:
            raise ConfigError(
                "missing required environment variable(s): "
                + ", ".join(missing)
                + " (see .env.example)"
            )


#: The variables :meth:`Settings.from_env` reads; the cache below is keyed on their values.
#: Variables that refine REDIS_URL (see omnichannel.redis_config).
_REDIS_VARIABLES = (
    "REDIS_USERNAME",
    "REDIS_PASSWORD",
    "REDIS_SENTINEL_USERNAME",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_TLS_CA_FILE",
    "REDIS_TLS_CERT_FILE",
    "REDIS_TLS_KEY_FILE",
    "REDIS_TLS_CHECK_HOSTNAME",
    "REDIS_RETRY_SECONDS",
)
_VARIABLES = _REDIS_VARIABLES + (
    "REDIS_URL",
    "PUBLIC_BASE_URL",
    "RASA_AUTH_TOKEN",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_PHONE_NUMBER",
    "TWILIO_MESSAGING_SERVICE_SID",
    "TWILIO_API_BASE_URL",
    "TRUSTED_PROXY_HOPS",
    "VAPI_SERVER_SECRET",
    "VAPI_CUSTOM_LLM_KEY",
    "WEBCHAT_JWT_SECRET",
    "WEBCHAT_ALLOW_ANONYMOUS",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "LLM_MODEL",
    "DEFAULT_PHONE_REGION",
    "HANDOFF_PHONE_NUMBER",
    "HANDOFF_TRANSFER_MODE",
    "HANDOFF_TIMEZONE",
    "HANDOFF_HOURS",
    "HANDOFF_HOLIDAYS",
    "HANDOFF_WAIT_NOTICE_MINUTES",
    "HANDOFF_GIVE_UP_HOURS",
    "INBOX_JWT_SECRET",
    "INBOX_JWT_AUDIENCE",
    "MAX_CONCURRENT_TURNS",
    "TWILIO_WHATSAPP_NUMBER",
    "VAPI_API_KEY",
    "VAPI_PHONE_NUMBER_ID",
    "VAPI_ASSISTANT_ID",
    "VAPI_API_BASE_URL",
    "NOTIFICATIONS_API_KEY",
)
#: Variables no longer read, refused at start-up with what replaces them.
_RETIRED = ("TRUST_PROXY_HEADERS",)
_parsed: Dict[Tuple[Optional[str], ...], Settings] = {}


def load_settings() -> Settings:
    """The process's settings, parsed once.

    Parts read this at start-up and pass the result down. The environment is parsed again
    only when one of its variables changed (tests and simulators set them per process), so a
    hot path that calls this pays a dictionary look-up, not a parse.
    """
    snapshot = tuple(os.environ.get(name) for name in _VARIABLES + _RETIRED)
    settings = _parsed.get(snapshot)
    if settings is None:
        settings = Settings.from_env()
        _parsed.clear()
        _parsed[snapshot] = settings
    return settings
