"""`make run`'s first-run settings (devtools/launcher.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.launcher import ensure_env_file
from testkit.local_env import read_env_file


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
