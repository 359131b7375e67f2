"""The project's conversation tests (tests/conversations/*.yml) through the real connectors of
the shared stack, and the runner's own behaviour: every failing case reported, with a diff."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.conversations import BadTestFile, Server, load_cases, run_cases, summary
from devtools.responses import ROOT
from testkit.stack import RasaStack

pytestmark = pytest.mark.rasa_server


async def test_the_project_conversation_suite_passes(rasa_stack: RasaStack) -> None:
    cases = load_cases([ROOT / "tests" / "conversations"])
    assert len(cases) >= 8
    results = await run_cases(cases, Server(rasa_stack.base_url, rasa_stack.env))
    assert all(result.passed for result in results), summary(results)


async def test_every_failing_case_is_reported_with_a_diff_per_step(
    rasa_stack: RasaStack, tmp_path: Path
) -> None:
    (tmp_path / "failing.yml").write_text(
        """
test_cases:
  - test_case: wrong wording by SMS
    channel: sms
    steps:
      - user: "what can you do"
      - bot: "Acme Shop assistant: ask about anything at all."
      - user: "are you a bot?"
      - utter: utter_goodbye
  - test_case: asked twice in chat
    channel: chat
    never_twice: [utter_ask_order_number]
    steps:
      - user: "where is my order"
      - user: "where is my order"
  - test_case: passes
    channel: voice
    steps:
      - user: "are you a bot?"
      - utter: utter_iamabot
"""
    )
    results = await run_cases(load_cases([tmp_path]), Server(rasa_stack.base_url, rasa_stack.env))
    assert [result.passed for result in results] == [False, False, True]
    report = summary(results)
    assert "FAILED wrong wording by SMS" in report and "FAILED asked twice in chat" in report
    # The diff shows what the texter got instead, and the next failing step of the same case.
    assert "- Acme Shop assistant: ask about anything at all." in report
    assert "+ Acme Shop assistant: ask about an order status" in report
    assert "step 4 (utter: 'utter_goodbye') on sms" in report
    assert "I'm a virtual assistant for Acme Shop" in report
    assert "utter_ask_order_number" in report and "received 2 times (never_twice)" in report
    assert report.endswith("1 of 3 conversation tests passed")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("steps: [{user: hi}]", "every case needs a test_case: name"),
        ("test_case: x\n    channel: fax\n    steps: [{user: hi}]", "channel 'fax' is not one of"),
        ("test_case: x\n    steps: [{user: hi, bot: hello}]", "exactly one of user:, bot:, utter:"),
        ("test_case: x\n    steps: [{bot: hi, channel: sms}]", "only a user: step names"),
        ("test_case: x\n    stepz: []", "unknown keys stepz"),
        ("test_case: x\n    steps: [{agent: dance}]", "agent: is one of claim, hand_back"),
        (
            "test_case: x\n    steps: [{agent_reply: hi, channel: voice}]",
            "an agent replies by sms or chat",
        ),
    ],
)
def test_malformed_cases_are_refused_with_their_place(
    tmp_path: Path, case: str, message: str
) -> None:
    (tmp_path / "bad.yml").write_text(f"test_cases:\n  - {case}\n")
    with pytest.raises(BadTestFile, match=message) as refused:
        load_cases([tmp_path])
    assert "bad.yml" in str(refused.value)
