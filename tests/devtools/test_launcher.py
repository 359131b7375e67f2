"""``make run``'s banner (devtools/launcher.py): the links it prints work as printed."""

from __future__ import annotations

import pytest

from connectors.inbox.auth import AgentVerifier
from devtools.launcher import print_banner
from testkit.stack import local_secrets


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
