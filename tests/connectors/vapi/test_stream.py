"""A turn's speech as an SSE stream: flushed when the turn goes quiet, stopped when superseded."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List

import pytest

from connectors.vapi.stream import FLUSH_AFTER_SECONDS, stream_speech, stream_static
from connectors.vapi.voice_turn import VoiceTurn
from connectors.vapi.wire import FLUSH, ChunkWriter
from testkit.fake_llm import LlmReply
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
    assert reply.done_seconds - reply.first_content_seconds >= 1.5
    assert reply.done_seconds >= 2.0
    # The filler is flushed so VAPI speaks it at once instead of waiting for more text.
    assert reply.chunks[1] == "<flush />"


# -- the stream, against a stand-in for Sanic's response ---------------------------------------


class _Response:
    def __init__(self) -> None:
        self.sent: List[str] = []
        self.ended = False

    async def send(self, data: str) -> None:
        self.sent.append(data)

    async def eof(self) -> None:
        self.ended = True


class _Request:
    def __init__(self) -> None:
        self.response = _Response()
        self.respond_kwargs: Dict[str, Any] = {}

    async def respond(self, **kwargs: Any) -> _Response:
        self.respond_kwargs = kwargs
        return self.response

    def contents(self) -> List[str]:
        frames = [frame for frame in self.response.sent if '"content"' in frame]
        return [json.loads(f[len("data: ") :])["choices"][0]["delta"]["content"] for f in frames]


def _turn() -> VoiceTurn:
    return VoiceTurn("c_1", "call-1", "answer", "call", 0, "hello", None)


@pytest.mark.unit
async def test_static_speech_is_one_complete_answer() -> None:
    request = _Request()
    await stream_static(request, ChunkWriter(model="rasa"), ["Hi there.", "", "Bye."])
    assert request.respond_kwargs["content_type"] == "text/event-stream"
    assert request.contents() == ["", "Hi there.", " Bye."]
    assert request.response.sent[-1].endswith("data: [DONE]\n\n") and request.response.ended


@pytest.mark.unit
async def test_a_quiet_turn_gets_a_flush_then_its_words() -> None:
    request = _Request()
    turn = _turn()
    streaming = asyncio.create_task(
        stream_speech(request, ChunkWriter(model="rasa"), turn.listen(), turn)
    )
    turn.say("One moment.")
    await asyncio.sleep(FLUSH_AFTER_SECONDS * 3)
    turn.say("Found it.")
    turn.finish()
    first_speech = await streaming
    assert first_speech is not None
    assert request.contents() == ["", "One moment.", FLUSH, " Found it."]


@pytest.mark.unit
async def test_a_superseded_turn_stops_streaming() -> None:
    request = _Request()
    turn = _turn()
    listener = turn.listen()
    turn.say("Answer to the cut-off question.")
    turn.supersede()
    assert await stream_speech(request, ChunkWriter(model="rasa"), listener, turn) is None
    assert request.contents() == [""]
    assert request.response.sent[-1].endswith("data: [DONE]\n\n")
