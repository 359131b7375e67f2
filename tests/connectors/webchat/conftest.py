"""The web chat tests' fixtures."""

from __future__ import annotations

import pytest

from testkit.stack import RasaStack


@pytest.fixture
def secret(rasa_stack: RasaStack) -> str:
    return rasa_stack.env["WEBCHAT_JWT_SECRET"]
