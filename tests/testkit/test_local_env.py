"""The settings every local tool (the SMS and VAPI simulators, the conversation tests) reads:
``.env``, overridden by exported variables."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from testkit.local_env import local_settings

pytestmark = pytest.mark.unit


def test_exported_variables_override_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_file, exported, only_exported = (secrets.token_hex(8) for _ in range(3))
    env_file = tmp_path / ".env"
    env_file.write_text(f"VAPI_SERVER_SECRET={in_file}\nTWILIO_AUTH_TOKEN={in_file}\n")
    monkeypatch.setenv("VAPI_SERVER_SECRET", exported)
    monkeypatch.setenv("WEBCHAT_JWT_SECRET", only_exported)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    settings = local_settings(env_file)
    assert settings["VAPI_SERVER_SECRET"] == exported
    assert settings["TWILIO_AUTH_TOKEN"] == in_file
    assert settings["WEBCHAT_JWT_SECRET"] == only_exported
    assert "HOME" not in settings  # only the tools' own settings, not the whole environment

