"""A turn's speech as an SSE stream: flushed when the turn goes quiet, stopped when superseded."""

from __future__ import annotations

import pytest

from devtools.fake_llm import LlmReply
from tests.support import GIBBERISH


@pytest.mark.rasa_server
async def test_filler_streams_first_while_a_slow_action_runs(stack, make_call, fake_llm):
    fake_llm.reset()
    fake_llm.script(LlmReply(content="I looked into it for you.", delay=2))
    call = make_call()
    reply = await call.say(GIBBERISH)
    assert reply.chunks[0] == "One moment."
    assert "I looked into it for you." in reply.text
    assert reply.text.index("One moment.") < reply.text.index("I looked into it")
    # The filler left the server long before the 2 s action finished.
    assert reply.first_content_seconds < 1.0
    assert reply.done_seconds >= 2.0
    # The filler is flushed so VAPI speaks it at once instead of waiting for more text.
    assert reply.chunks[1] == "<flush />"
