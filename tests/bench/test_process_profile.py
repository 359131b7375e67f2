"""The profile summary (bench/process_profile.py) on stacks written as py-spy writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.process_profile import REST, shares, summary

pytestmark = pytest.mark.unit

ROOT = (
    "_run_module_as_main (runpy.py:196);main (rasa/__main__.py:133);"
    "serve (sanic/server/runners.py:155)"
)
TURN = ROOT + ";handle_message (rasa/core/processor.py:169)"
RAW = "\n".join(
    (
        # waiting in uvloop: idle
        f"{ROOT} 60",
        f"{TURN};parse_message (rasa/core/processor.py:868);_create_X (rasa/nlu/x.py:1) 10",
        f"{TURN};_predict_next_with_tracker (rasa/core/processor.py:1);"
        "states_for_tracker_history (rasa/shared/core/domain.py:2) 15",
        f"{TURN};_predict_next_with_tracker (rasa/core/processor.py:1) 5",
        f"{TURN};save (connectors/tracker_store.py:9);execute (redis/asyncio/client.py:3) 6",
        f"{ROOT};_run_turns (connectors/webchat/connection.py:522) 4",
        "not a stack line",
    )
)


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    path = tmp_path / "ours-random-40.txt"
    path.write_text(RAW + "\n")
    return path


def test_shares_are_of_the_busy_samples_and_nest(profile: Path) -> None:
    found = shares(profile)
    assert (found.samples, found.busy) == (100, 40)
    assert found.parts["NLU (parse_message)"] == pytest.approx(10 / 40)
    assert found.parts["policies (_predict_next_with_tracker)"] == pytest.approx(20 / 40)
    assert found.parts["  featurising states (states_for_tracker_history)"] == pytest.approx(
        15 / 40
    )
    assert found.parts["tracker store"] == pytest.approx(6 / 40)
    assert found.parts["Redis client (redis/)"] == pytest.approx(6 / 40)
    assert found.parts[REST] == pytest.approx(4 / 40)
    assert found.parts["lock store"] == 0.0


def test_summary_says_how_busy_and_is_none_without_a_profile(profile: Path, tmp_path: Path) -> None:
    text = summary(profile, "ours, random, 40")
    assert text is not None
    assert text.splitlines()[0].startswith("profile of ours, random, 40: busy in 40% of 100")
    assert " 50.0%  policies (_predict_next_with_tracker)" in text
    assert summary(tmp_path / "missing.txt", "x") is None
