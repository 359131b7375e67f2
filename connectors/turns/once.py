"""Processing a customer's message at most once, whichever replica runs it.

Durable in-flight work (:mod:`omnichannel.leases`) is taken over by another replica when its
owner stops renewing the lease: the owner may have died before Rasa processed the message, or
after (the event log then holds it, only the reply was not delivered), or only be slow. So every
turn that may be run twice goes through :func:`handle_once`: under the conversation's lock, the
same hold Rasa's processor runs in, it looks for a user event with the message's id in the event
log and processes the message only when there is none, in one of the process's turn slots
(:mod:`connectors.turns.slots`: a burst is answered in arrival order). Whoever comes second
finds the first one's events (:func:`replies_to`) instead of running the turn again.

Every channel runs its turns through :func:`run_once` (``run_turn`` around ``handle_once``) and,
when that finds the message processed by a run that did not answer, delivers :func:`replay`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Optional

from rasa.core.channels.channel import UserMessage
from rasa.shared.core.events import ActionExecuted, BotUttered, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.handoff import turns as handoff_turns
from connectors.turns.run import processor_of, run_turn
from connectors.turns.slots import turn_slots

if TYPE_CHECKING:
    from rasa.core.agent import Agent

#: Runs under the lock before the message is processed; returns False to drop the message
#: (a voice turn superseded while it waited).
BeforeProcessing = Callable[[DialogueStateTracker], Awaitable[bool]]


def find_user_event(tracker: DialogueStateTracker, message_id: str) -> Optional[int]:
    """Index of the user event carrying ``message_id`` in ``tracker.events``, newest first."""
    events = list(tracker.events)
    for index in range(len(events) - 1, -1, -1):
        event = events[index]
        if isinstance(event, UserUttered) and event.message_id == message_id:
            return index
    return None


def replies_to(tracker: DialogueStateTracker, message_id: str) -> List[Dict[str, Any]]:
    """The bot messages the turn of ``message_id`` produced (as Rasa hands them to an output
    channel: text, buttons, image, custom…), for a replica delivering a turn it did not run."""
    index = find_user_event(tracker, message_id)
    if index is None:
        return []
    replies: List[Dict[str, Any]] = []
    for event in list(tracker.events)[index + 1 :]:
        if isinstance(event, UserUttered):
            break
        if isinstance(event, BotUttered):
            data = {key: value for key, value in (event.data or {}).items() if value is not None}
            replies.append({"text": event.text, **data})
        elif isinstance(event, ActionExecuted) and event.action_name == "action_listen":
            break
    return replies


async def handle_once(
    agent: Agent, message: UserMessage, before: Optional[BeforeProcessing] = None
) -> bool:
    """Rasa's ``agent.handle_message`` (the conversation lock, then the processor) unless the
    event log already holds ``message.message_id``; True when the message was processed here.
    While a person holds the conversation the bot stands aside
    (:func:`connectors.handoff.turns.handle_message`).

    Use it as the ``on_new_message`` of :func:`connectors.turns.run.run_turn`, which keeps failures
    loud. ``message.message_id`` must be the channel's own stable id of the message (the same on
    every attempt), not one made up per attempt.
    """
    async with agent.lock_store.lock(message.sender_id):
        tracker = await processor_of(agent).get_tracker(message.sender_id)
        if find_user_event(tracker, message.message_id) is not None:
            return False
        if before is not None and not await before(tracker):
            return False
        async with turn_slots().held():
            await handoff_turns.handle_message(agent, message, tracker)
    return True


async def run_once(
    agent: Agent,
    message: UserMessage,
    *,
    trusted_payload: bool = False,
    before: Optional[BeforeProcessing] = None,
) -> bool:
    """A channel's turn: :func:`connectors.turns.run.run_turn` (failures loud, a customer's
    ``/…`` escaped unless ``trusted_payload``) around :func:`handle_once`; True when this run
    processed the message, False when the event log held it already or ``before`` dropped it.
    Raises TurnFailed."""
    processed: List[bool] = []

    async def once(message: UserMessage) -> None:
        processed.append(await handle_once(agent, message, before))

    await run_turn(agent, once, message, trusted_payload=trusted_payload)
    return bool(processed and processed[0])


async def replay(agent: Agent, message: UserMessage) -> List[Dict[str, Any]]:
    """What the run that processed ``message`` before (on a replica that stopped before
    answering) said, from the event log, for the channel to deliver as this turn's replies."""
    tracker = await processor_of(agent).get_tracker(message.sender_id)
    return replies_to(tracker, message.message_id)
