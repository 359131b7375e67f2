"""One voice turn: its transitions (and the ones it refuses), its listeners, its bot messages."""

from __future__ import annotations

import asyncio
from typing import List, Optional

import pytest

from connectors.vapi.hearing import SpokenTurn
from connectors.vapi.voice_turn import APOLOGY, END, IllegalTransition, TurnState, VoiceTurn
from omnichannel.rendering.messages import BotMessage

pytestmark = pytest.mark.unit


def _turn(control_url: Optional[str] = "https://vapi.example/control") -> VoiceTurn:
    return VoiceTurn(
        conversation_id="c_1",
        call_id="call-1",
        turn_id="turn",
        call_key="call",
        ordinal=2,
        last_text="my order",
        control_url=control_url,
    )


def _drain(queue: asyncio.Queue) -> List[Optional[str]]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def test_a_new_turn_is_claimed_and_answers_its_last_message() -> None:
    turn = _turn()
    assert turn.state is TurnState.CLAIMED and turn.open and not turn.superseded
    assert (turn.text, turn.first_ordinal) == ("my order", 2)
    assert turn.request_id != turn.message_id
    turn.hear(SpokenTurn(ordinal=2, first_ordinal=1, text="where is my order"), max_chars=12)
    assert turn.text == "where is my order"[-12:] and turn.first_ordinal == 1


def test_claimed_running_finished() -> None:
    turn = _turn()
    early = turn.listen()
    turn.say("One moment.")
    turn.start()
    assert turn.state is TurnState.RUNNING and turn.open
    turn.say("")
    turn.say("It shipped.")
    turn.finish()
    assert turn.state is TurnState.FINISHED and not turn.open
    turn.say("too late")
    assert turn.spoken == ["One moment.", "It shipped."]
    assert turn.sent_text == "One moment. It shipped."
    assert _drain(early) == ["One moment.", "It shipped.", END]
    # A listener that comes late hears it all from the start, and the end.
    assert _drain(turn.listen()) == ["One moment.", "It shipped.", END]


@pytest.mark.parametrize(
    "steps, refused",
    [
        (["start"], "start"),
        (["finish"], "start"),
        (["finish"], "finish"),
        (["finish"], "supersede"),
        (["supersede"], "finish"),
        (["supersede"], "supersede"),
        (["supersede"], "start"),
        (["start", "supersede"], "finish"),
        (["start", "finish"], "supersede"),
    ],
)
def test_illegal_transitions_are_refused(steps: List[str], refused: str) -> None:
    turn = _turn()
    for step in steps:
        getattr(turn, step)()
    state = turn.state
    with pytest.raises(IllegalTransition):
        getattr(turn, refused)()
    assert turn.state is state


async def test_superseded_while_claimed_cancels_the_task_that_waits_for_rasa() -> None:
    turn = _turn()
    listener = turn.listen()
    turn.task = asyncio.create_task(asyncio.sleep(60))
    turn.say("One moment.")
    turn.supersede()
    assert turn.superseded and not turn.open
    with pytest.raises(asyncio.CancelledError):
        await turn.task
    turn.say("Answer to the cut-off question.")
    assert _drain(listener) == ["One moment.", END]


async def test_superseded_while_running_ends_the_streams_and_leaves_rasa_be() -> None:
    turn = _turn()
    listener = turn.listen()
    turn.task = asyncio.create_task(asyncio.sleep(60))
    turn.start()
    turn.supersede()
    await asyncio.sleep(0)
    assert not turn.task.cancelled()
    turn.task.cancel()
    assert _drain(listener) == [END]


def test_bot_messages_are_spoken_or_kept_as_call_controls() -> None:
    turn = _turn()
    turn.add_bot_message(BotMessage(text="Order **12345** shipped."))
    turn.add_bot_message(BotMessage(text="Texted.", delivered_on="sms"))
    turn.add_bot_message(BotMessage(text="Bye!", custom={"call_control": "end_call"}))
    turn.add_bot_message(
        BotMessage(
            text="Putting you through.",
            custom={"call_control": "transfer", "destination": "+14155550100"},
        )
    )
    assert turn.spoken == ["Order 1 2 3 4 5 shipped."]
    goodbye, transfer = turn.controls
    assert goodbye.payload == {"type": "say", "content": "Bye!", "endCallAfterSpoken": True}
    # If VAPI cannot be asked, the goodbye is streamed; a transfer that did not happen is not.
    assert goodbye.fallback_speech == "Bye!"
    assert transfer.payload["type"] == "transfer"
    assert transfer.fallback_speech == APOLOGY


def test_call_controls_without_a_control_url_are_just_spoken() -> None:
    turn = _turn(control_url=None)
    turn.add_bot_message(BotMessage(text="Bye!", custom={"call_control": "end_call"}))
    turn.add_bot_message(BotMessage(text="Hm.", custom={"call_control": "explode"}))
    assert turn.spoken == ["Bye!", "Hm."] and turn.controls == []
