"""Settings (omnichannel/settings.py): parsed from the environment once, refusals that name the
variable and never echo a secret."""

from __future__ import annotations

import pytest

from omnichannel.errors import ConfigError
from omnichannel.settings import Settings, load_settings

pytestmark = pytest.mark.unit


def test_a_refused_redis_url_does_not_quote_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        Settings.from_env({"REDIS_URL": "http://admin:hunter2-secret@redis.internal:6379/0"})
    assert "REDIS_URL" in str(refused.value) and "'http'" in str(refused.value)
    assert "hunter2" not in str(refused.value) and "redis.internal" not in str(refused.value)


def test_settings_are_parsed_once_until_the_environment_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LLM_MODEL", "model-a")
    first = load_settings()
    assert load_settings() is first and first.llm_model == "model-a"
    monkeypatch.setenv("LLM_MODEL", "model-b")
    assert load_settings().llm_model == "model-b"


def test_malformed_values_name_their_variable() -> None:
    with pytest.raises(ConfigError, match="HANDOFF_PHONE_NUMBER"):
        Settings.from_env({"HANDOFF_PHONE_NUMBER": "555-0100"})
    with pytest.raises(ConfigError, match="DEFAULT_PHONE_REGION"):
        Settings.from_env({"DEFAULT_PHONE_REGION": "USA"})


def test_concurrent_turns_default_and_bounds() -> None:
    assert Settings.from_env({}).max_concurrent_turns == 8
    assert Settings.from_env({"MAX_CONCURRENT_TURNS": "2"}).max_concurrent_turns == 2
    for refused in ("0", "-1", "1001", "eight", "٣"):
        with pytest.raises(ConfigError, match="MAX_CONCURRENT_TURNS"):
            Settings.from_env({"MAX_CONCURRENT_TURNS": refused})
