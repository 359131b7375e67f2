"""What the barge-in actions (actions/barge_in.py) take for noise rather than a request: pure,
tested directly (the actions themselves run against the real stack in test_barge_in.py)."""

from __future__ import annotations

import pytest

from actions.barge_in import is_noise

pytestmark = pytest.mark.unit


def test_noise_is_a_few_characters() -> None:
    assert is_noise("hm") and is_noise("uh.") and is_noise("")
    assert not is_noise("what about my refund")
