"""The local settings every local tool signs and connects with: ``.env`` (which ``make run``
writes with fresh secrets on first run), each value overridden by the same variable exported in
the environment. The launcher, the simulators, the conversation tests and the fake Twilio's
command line read it here, so local traffic passes the same signature checks as production's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict

from testkit.processes import ROOT

ENV_FILE = ROOT / ".env"


def read_env_file(path: Path = ENV_FILE) -> Dict[str, str]:
    values: Dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip().strip('"').strip("'")
    return values


def local_settings(path: Path = ENV_FILE) -> Dict[str, str]:
    """The settings the local tools sign and connect with: ``.env`` (what ``make run`` wrote),
    each overridden by the same variable exported in the environment."""
    values = read_env_file(path)
    values.update(
        {name: os.environ[name] for name in values.keys() | _EXPORTED if name in os.environ}
    )
    return values


#: Settings a tool may take from the environment even when .env lacks them.
_EXPORTED = frozenset(
    {
        "PUBLIC_BASE_URL",
        "REDIS_URL",
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_PHONE_NUMBER",
        "TWILIO_API_BASE_URL",
        "VAPI_SERVER_SECRET",
        "VAPI_CUSTOM_LLM_KEY",
        "WEBCHAT_JWT_SECRET",
        "INBOX_JWT_SECRET",
        "INBOX_JWT_AUDIENCE",
        "NOTIFICATIONS_API_KEY",
    }
)
