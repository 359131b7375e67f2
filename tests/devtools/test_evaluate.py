"""The regression suite's story evaluation (devtools/evaluate.py): a test story whose user text
does not mean its intent fails, by name, with what NLU predicted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from devtools.evaluate import evaluate_stories, failed_stories, is_project_story
from testkit.processes import ROOT

MISLABELLED = """
version: "3.1"
stories:
  - story: Mislabelled store hours
    steps:
      - user: |
          zxqv blorft wibble
        intent: check_order_status
      - action: order_status_form
      - active_loop: order_status_form
  - story: A true one
    steps:
      - user: |
          are you a bot?
        intent: bot_challenge
      - action: utter_iamabot
"""


def test_a_mislabelled_user_text_fails_the_story_by_name(
    trained_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    stories = tmp_path / "test_mislabelled.yml"
    stories.write_text(MISLABELLED)
    out = tmp_path / "results"
    (out / "stale").mkdir(parents=True)  # a previous run's files do not survive
    assert evaluate_stories(stories, out) == 1
    printed = capsys.readouterr().out
    assert "FAILED story: Mislabelled store hours" in printed
    assert "predicted: nlu_fallback: zxqv blorft wibble" in printed
    assert "A true one" not in printed.split("passed")[0]
    assert "1 of 2 test stories passed end to end" in printed
    assert not (out / "stale").exists()
    assert not list(out.glob("TEDPolicy_*"))
    assert [name for name, _ in failed_stories(out / "failed_test_stories.yml")] == [
        f"Mislabelled store hours ({stories})"
    ]


@pytest.mark.unit
def test_plain_rasa_test_may_only_find_the_projects_own_stories() -> None:
    """Rasa names each story it ran with its file, relative to the project when it found it
    there; one from a package installed in the venv (Rasa's own template) is not ours."""
    assert is_project_story("Order status by number (./tests/test_stories.yml)")
    assert is_project_story(f"Refunds ({ROOT / 'tests' / 'test_stories.yml'})")
    venv = Path(sys.prefix)
    template = venv / "lib/python3.10/site-packages/rasa/cli/initial_project/tests/x.yml"
    assert not is_project_story(f"sad path 1 ({template})")
    assert not is_project_story("elsewhere (/tmp/test_stories.yml)")
