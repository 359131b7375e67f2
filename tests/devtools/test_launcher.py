"""`make run`'s first-run settings and banner (devtools/launcher.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.inbox.auth import AgentVerifier
from devtools.launcher import ensure_env_file, print_banner
from testkit.local_env import read_env_file
from testkit.stack import local_secrets


@pytest.mark.unit
def test_first_run_fills_in_missing_and_empty_secrets_only(tmp_path: Path) -> None:
    """A .env copied from .env.example leaves VAPI_CUSTOM_LLM_KEY empty; the VAPI channel needs
    it, so `make run` generates it, while a setting left empty on purpose stays empty."""
    env_file = tmp_path / ".env"
    env_file.write_text("VAPI_CUSTOM_LLM_KEY=\nTWILIO_API_BASE_URL=\nRASA_AUTH_TOKEN=mine\n")
    values = ensure_env_file(env_file)
    assert len(values["VAPI_CUSTOM_LLM_KEY"]) >= 24
    assert values["TWILIO_API_BASE_URL"] == "" and values["RASA_AUTH_TOKEN"] == "mine"  # noqa: S105
    assert read_env_file(env_file) == values


@pytest.mark.unit
def test_make_run_prints_an_inbox_link_a_local_agent_signs_in_with(
    capsys: pytest.CaptureFixture,
) -> None:
    env = local_secrets(5005)
    print_banner(env, "redis://127.0.0.1:6379")
    printed = capsys.readouterr().out
    [link] = [line.strip() for line in printed.splitlines() if "/webhooks/inbox/#token=" in line]
    assert link.startswith("http://127.0.0.1:5005/webhooks/inbox/#token=")
    agent = AgentVerifier(env["INBOX_JWT_SECRET"], "omni-inbox").verify(link.split("=", 1)[1])
    assert agent.actor.name == "Local agent"
