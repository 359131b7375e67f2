"""The bot standing aside and coming back, in Rasa's own terms, and what it says meanwhile.

Rasa 3.6 has the mechanism: ``ConversationPaused`` pauses a tracker, ``ConversationResumed``
resumes it. A paused tracker still takes every user message the usual way: the message is
parsed (NLU runs), logged as a ``UserUttered`` with its intent and entities, and the slot
mappings run (``action_extract_slots``); only the prediction loop stops
(``MessageProcessor._should_handle_message``), so no action runs and nothing is answered. The
customer's words are thus in the event log, with everything Rasa understood of them, for the
agent to read and for the bot once it resumes: slots set while a person held the conversation
(an order number the customer gave the agent) are the bot's too, and nothing set before is
lost. After each held message the log gets ``action_listen``, as after any answered turn, so
the dialogue state looks as Rasa's policies expect when the bot takes over again.

Every change here is one append to the event log under the conversation's lock (the lock Rasa
takes for a turn), as ``docs/specs/rasa-3.6-notes.md`` says state is injected outside a turn.
Functions named ``*_locked`` take the lock; the others expect the caller to hold it (a turn in
:mod:`connectors.turns.once`, which already does).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

from rasa.core.actions.action import create_bot_utterance
from rasa.core.channels.channel import OutputChannel
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    ConversationPaused,
    ConversationResumed,
    Event,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.turns.run import processor_of

logger = logging.getLogger(__name__)

#: Metadata key on the pause and resume events (and on bot messages of the hand-off): what
#: happened and who did it, for the viewer's timeline.
HANDOFF = "handoff"


def pause_event(why: str, **details: Any) -> ConversationPaused:
    return ConversationPaused(metadata={HANDOFF: {"event": why, **details}})


def resume_event(why: str, **details: Any) -> ConversationResumed:
    return ConversationResumed(metadata={HANDOFF: {"event": why, **details}})


def listened(tracker: DialogueStateTracker) -> List[Event]:
    """``action_listen``, unless the bot already listens: its latest action (after the latest
    user message) is ``action_listen``."""
    for event in reversed(tracker.events):
        if isinstance(event, UserUttered):
            break
        if isinstance(event, ActionExecuted):
            if event.action_name == ACTION_LISTEN_NAME:
                return []
            break
    return [ActionExecuted(ACTION_LISTEN_NAME)]


async def append(agent: Any, conversation_id: str, events: Sequence[Event]) -> DialogueStateTracker:
    """Appends ``events`` to the conversation (the caller holds its lock); returns the tracker."""
    tracker = await processor_of(agent).get_tracker(conversation_id)
    for event in events:
        tracker.update(event)
    await processor_of(agent).save_tracker(tracker)
    return tracker


async def append_locked(
    agent: Any, conversation_id: str, events: Sequence[Event]
) -> DialogueStateTracker:
    """:func:`append` under the conversation's lock."""
    async with agent.lock_store.lock(conversation_id):
        return await append(agent, conversation_id, events)


async def resume_locked(agent: Any, conversation_id: str, why: str, **details: Any) -> bool:
    """Resumes the bot unless it is not paused; True when it was."""
    async with agent.lock_store.lock(conversation_id):
        tracker = await processor_of(agent).get_tracker(conversation_id)
        if not tracker.is_paused():
            return False
        tracker.update(resume_event(why, **details))
        await processor_of(agent).save_tracker(tracker)
        return True


async def bot_message(
    agent: Any,
    tracker: DialogueStateTracker,
    response: str,
    output_channel: str,
    metadata: Optional[Dict[str, Any]] = None,
    values: Optional[Mapping[str, str]] = None,
) -> Optional[BotUttered]:
    """The domain's ``response`` as Rasa would utter it on ``output_channel`` (a connector
    name, for its ``channel:`` variations), filled with ``values`` and the tracker's slots;
    None (logged) when the domain lacks it."""
    generated = await processor_of(agent).nlg.generate(
        response, tracker, output_channel, **dict(values or {})
    )
    if generated is None:
        logger.error("hand-off: the domain has no response %s", response)
        return None
    generated = dict(generated)
    generated["utter_action"] = response
    if metadata:
        generated.update(metadata)
    return create_bot_utterance(generated)


async def say(
    agent: Any,
    conversation_id: str,
    output: OutputChannel,
    response: str,
    *,
    after: Sequence[Event] = (),
    listen: bool = False,
    values: Optional[Mapping[str, str]] = None,
) -> None:
    """Says ``response`` on the turn's ``output`` channel and logs it, then ``after`` (and
    ``action_listen`` when ``listen``), as if an action had uttered it; the caller holds the
    lock."""
    tracker = await processor_of(agent).get_tracker(conversation_id)
    uttered = await bot_message(agent, tracker, response, output.name(), values=values)
    if uttered is not None:
        tracker.update(uttered)
    for event in after:
        tracker.update(event)
    for event in listened(tracker) if listen else ():
        tracker.update(event)
    await processor_of(agent).save_tracker(tracker)
    if uttered is not None:
        await output.send_response(conversation_id, uttered.message())
