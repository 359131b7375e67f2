"""A customer's turn, hand-off aware: the one place every channel's turn passes (from
:func:`connectors.turns.once.handle_once`, under the conversation's lock).

- No hand-off open: Rasa handles the message as always. If the turn asked for a person (the
  hand-off action recorded a hand-off and paused the bot), the turn is closed the way any turn
  is (``action_listen``), counted, and helpdesks are asked to sync.
- A hand-off open: the message is parsed once (NLU) and the waiting rules decide
  (:class:`~omnichannel.handoff.policy.HeldTurn`):

  * *hold*: Rasa logs it while the bot stands aside (paused: the ``UserUttered`` with its
    intent and entities, the slots it fills, no action), for the agent to read live; on a call
    the caller hears what happens instead of silence;
  * *withdraw* ("never mind" while nobody has claimed it): the hand-off is abandoned by the
    customer, the bot says so and is back;
  * *answer* (a question the bot knows, while queued): the bot answers it and stands aside
    again; the request keeps its place, and the customer is reminded of it.

The hand-off record decides, not the tracker: a tracker still paused after its hand-off closed
(the close could not resume it, or the record expired) is resumed here, and an open hand-off
whose tracker is not paused (a new session began) is paused, before the message is handled.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Optional

from rasa.core.channels.channel import UserMessage
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.handoff import bot
from connectors.handoff.engine import HandoffEngine, handoff_engine
from connectors.turns.run import processor_of
from omnichannel import metrics
from omnichannel.channels import kind_of
from omnichannel.handoff.policy import ANSWER, HOLD, WITHDRAW
from omnichannel.handoff.state import TRANSFERRED, Actor, Handoff, TransitionRefused
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable

logger = logging.getLogger(__name__)


async def _record(engine: HandoffEngine, conversation_id: str) -> Optional[Handoff]:
    try:
        return await engine.store.get(conversation_id)
    except REDIS_FAILURES as error:
        raise StateUnavailable(f"hand-off state unavailable ({type(error).__name__})") from error


async def handle_message(agent: Any, message: UserMessage, tracker: DialogueStateTracker) -> None:
    """Handles ``message`` (see the module docstring); the caller holds the lock."""
    engine = handoff_engine()
    cid = message.sender_id
    handoff = await _record(engine, cid)
    held = handoff is not None and handoff.is_open
    if tracker.is_paused() and not held:
        logger.warning("conversation %s was paused with no open hand-off: resumed", cid)
        await bot.append(agent, cid, [bot.resume_event("repaired")])
    if not held:
        await processor_of(agent).handle_message(message)
        await _after_turn(engine, agent, cid, handoff)
        return
    assert handoff is not None
    if not tracker.is_paused():
        logger.warning("conversation %s has an open hand-off but was not paused: paused", cid)
        await bot.append(agent, cid, [bot.pause_event("repaired")])
    await _held_turn(engine, agent, message, tracker, handoff)


async def _after_turn(
    engine: HandoffEngine, agent: Any, cid: str, before: Optional[Handoff]
) -> None:
    """A hand-off asked for during this turn: the turn ends listening, as any turn does (Rasa
    stops predicting once paused), and it is counted and announced."""
    after = await _record(engine, cid)
    if after is None or (before is not None and after.id == before.id):
        return
    metrics.handoff_event(after.channel, "requested")
    if after.state == TRANSFERRED:
        metrics.handoff_event(after.channel, "transferred")
    if after.is_open:
        tracker = await processor_of(agent).get_tracker(cid)
        events = bot.listened(tracker) + (
            [] if tracker.is_paused() else [bot.pause_event("repaired")]
        )
        await bot.append(agent, cid, events)
        logger.info("conversation %s handed off (%s, %s)", cid, after.channel, after.reason)
        # The request was published before this turn's events were stored: pages refresh the
        # queue item now that the customer's words are in the log.
        await engine.customer_wrote(cid)
    else:
        await engine.changed(cid)


async def _held_turn(
    engine: HandoffEngine,
    agent: Any,
    message: UserMessage,
    tracker: DialogueStateTracker,
    handoff: Handoff,
) -> None:
    cid = message.sender_id
    output = message.output_channel
    # Parsed once: Rasa reuses ``parse_data`` when it logs the message.
    message.parse_data = await processor_of(agent).parse_message(message, tracker)
    intent = message.parse_data.get("intent") or {}
    decision: Optional[str] = engine.policy.decide(
        handoff, intent.get("name"), float(intent.get("confidence") or 0.0)
    )
    if decision == WITHDRAW:
        now = time.time()
        try:
            _, after = await engine.store.update(
                cid, lambda h: h.abandon(Actor.customer(), now, "withdrawn by the customer")
            )
        except TransitionRefused:
            decision = None  # an agent claimed it meanwhile: the message is theirs
        else:
            metrics.handoff_event(after.channel, "abandoned")
            await processor_of(agent).handle_message(message)  # logged; the bot still stands aside
            await bot.say(
                agent,
                cid,
                output,
                "utter_handoff_withdrawn",
                after=[bot.resume_event("withdrawn", by=Actor.customer().as_dict())],
                listen=True,
            )
            await engine.customer_wrote(cid)
            return
    if decision == ANSWER:
        await bot.append(agent, cid, [bot.resume_event("answer_while_waiting")])
        await processor_of(agent).handle_message(message)
        await bot.say(
            agent,
            cid,
            output,
            "utter_handoff_still_queued",
            after=[bot.pause_event("answer_while_waiting")],
        )
        await engine.customer_wrote(cid)
        return
    await processor_of(agent).handle_message(message)  # logged with its NLU; nothing predicted
    notice = engine.policy.notice(handoff, HOLD, kind_of(message.metadata, message.input_channel))
    if notice is not None:
        await bot.say(
            agent, cid, output, notice, listen=True, values=engine.template_values(time.time())
        )
    else:
        await bot.append(agent, cid, bot.listened(await processor_of(agent).get_tracker(cid)))
    await engine.customer_wrote(cid)
