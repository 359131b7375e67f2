"""Answering one caller utterance through Rasa exactly once, whatever VAPI re-POSTs: the durable
turn of :mod:`connectors.turns.durable`, with the voice wire (VAPI's transcribed history) and
delivery (speech streamed to every request listening, recorded for duplicates).

- **Duplicates.** A turn is keyed by (call id, ordinal of its last user message, its text); the
  first request claims the key in Redis (state.py) and its answer is recorded there; a
  duplicate replays that answer, live if the turn still runs (here or on another replica),
  without a second Rasa turn.
- **Takeover.** A running turn holds a short lease on its record, renewed while it runs. A
  duplicate finding the lease run out (the replica died or hangs) takes the turn over and
  answers the caller itself; the sweeper (:func:`omnichannel.leases.takeover`) does the same
  for a turn nobody re-POSTs, so its utterance and answer are recorded. Either way the turn
  goes through :func:`connectors.turns.once.run_once`: if the dead replica had processed the
  utterance, its replies in the event log are spoken (no second Rasa turn), else it runs.
- **Superseded turns.** When the caller keeps talking, VAPI cancels the request and POSTs again
  with a longer utterance (hearing.supersedes decides). The new turn takes over the call's "in
  flight" record and the old one is superseded (voice_turn.py): on this replica at once, on another
  through a mark in Redis its replica polls. Once the old turn is done, the new one appends
  ``UserUtteranceReverted`` (and the ``action_listen`` the revert takes back) for it under the
  conversation lock, right before its own message is processed (same lock hold), so the
  dialogue state holds one user turn for the utterance (an active form stays active). The
  superseded exchange stays in the event log, marked by the revert.
- **Detached.** The turn runs as a background task, not in the HTTP request: VAPI cancelling a
  request never cuts a turn in half.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, Optional, Sequence

from rasa.core.channels.channel import OutputChannel, UserMessage
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.events import ActionExecuted, UserUtteranceReverted, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.turns.once import replay, run_once
from connectors.turns.run import TurnFailed, processor_of
from connectors.vapi.call_control import send_control
from connectors.vapi.hearing import SpokenTurn, barge_in, spoken_turn, supersedes
from connectors.vapi.state import CallStore
from connectors.vapi.voice_turn import APOLOGY, END, VoiceTurn
from connectors.vapi.wire import USER_TEXT_MAX_CHARS, ChatMessage
from omnichannel import metrics
from omnichannel.channels import VAPI
from omnichannel.leases import Lease
from omnichannel.redis_client import StateUnavailable
from omnichannel.rendering.messages import BotMessage
from omnichannel.tasks import BackgroundTasks

if TYPE_CHECKING:
    from rasa.core.agent import Agent

logger = logging.getLogger(__name__)

#: How often a running turn checks whether another replica superseded it.
SUPERSEDE_POLL_SECONDS = 0.2
#: How often a duplicate checks on the answer of a turn running on another replica.
REPLAY_POLL_SECONDS = 0.05


@dataclass(frozen=True)
class Started:
    """What a request streams: ``listener`` yields the speech of ``turn`` (None: a replay of an
    answer recorded by another replica); ``claimed`` when this request runs the turn."""

    listener: asyncio.Queue
    turn: Optional[VoiceTurn]
    claimed: bool


class TurnRunner:
    """The voice turns of one process."""

    def __init__(
        self,
        calls: CallStore,
        tasks: BackgroundTasks,
        output: Callable[[VoiceTurn], OutputChannel],
        barge_in_threshold: float,
        duplicate_wait_seconds: float,
    ) -> None:
        self.calls = calls
        self.tasks = tasks
        #: The output channel Rasa's bot messages for a turn go to.
        self.output = output
        #: Below this share of our words heard, the caller cut the bot off.
        self.barge_in_threshold = barge_in_threshold
        #: How long a duplicate waits for a turn running on another replica.
        self.duplicate_wait_seconds = duplicate_wait_seconds
        #: Turns running in this process, by turn id (duplicates attach to them).
        self._turns: Dict[str, VoiceTurn] = {}

    async def start(
        self,
        agent: Agent,
        turn: VoiceTurn,
        messages: Sequence[ChatMessage],
    ) -> Started:
        """Claim ``turn`` and run it, or attach to the request that claimed it first.

        Claiming and running go on in a task of their own, which finishes even if VAPI drops
        the request. Raises StateUnavailable when the turn could not even be claimed.
        """
        started: asyncio.Future = asyncio.get_running_loop().create_future()
        work = self._claim_and_run(agent, turn, messages, started)
        self.tasks.start(self._begin(turn, work, started), f"turn on call {turn.call_id}")
        return await asyncio.shield(started)

    @staticmethod
    async def _begin(turn: VoiceTurn, work: Awaitable[None], started: asyncio.Future) -> None:
        """Runs ``work``; should it fail before ``started`` is settled, the request gets
        StateUnavailable (an apology) instead of waiting forever."""
        try:
            await work
        except Exception as error:
            if started.done():
                raise
            logger.exception("voice call %s: could not start the turn", turn.call_id)
            started.set_exception(StateUnavailable(f"starting the turn failed: {error!r}"))

    async def _claim_and_run(
        self,
        agent: Agent,
        turn: VoiceTurn,
        messages: Sequence[ChatMessage],
        started: asyncio.Future,
    ) -> None:
        local = self._turns.get(turn.turn_id)
        if local is not None:
            started.set_result(Started(local.listen(), local, claimed=False))
            return
        try:
            claim = await self.calls.claim(turn)
        except StateUnavailable as error:
            started.set_exception(error)
            return
        if claim.call is None or claim.lease is None:
            queue: asyncio.Queue = asyncio.Queue()
            started.set_result(Started(queue, None, claimed=False))
            await self._replay(agent, turn, claim.answer or {}, queue)
            return
        call = claim.call
        spoken = spoken_turn(messages, call.last_sent) or SpokenTurn(
            turn.ordinal, turn.ordinal, turn.last_text
        )
        turn.hear(spoken, USER_TEXT_MAX_CHARS)
        previous = call.in_flight
        if previous is not None and supersedes(previous, turn.request_id, turn.last_text, spoken):
            turn.previous = previous
            self._supersede_here(str(previous.get("turn_id")))
            await self.calls.mark_superseded(turn.call_key, str(previous.get("request")))
        heard = barge_in(
            call.last_sent, call.interrupted_at, messages, spoken, self.barge_in_threshold
        )
        if heard:
            turn.metadata = {**turn.metadata, "barge_in": heard}
            logger.info(
                "call %s: barge-in, caller heard %.0f%% of the last answer",
                turn.call_id,
                heard["heard_ratio"] * 100,
            )
        async with self.calls.turns.held(claim.lease):
            await self.calls.prepare(claim.lease, turn)
            started.set_result(Started(turn.listen(), turn, claimed=True))
            await self._own(agent, turn, claim.lease)

    async def resume(self, agent: Agent, lease: Lease) -> None:
        """Finishes a turn another replica left running (the sweeper's handler, called while
        ``lease`` is held): nobody may be listening, but its utterance and answer are recorded
        and a later re-POST replays them."""
        await self._own(agent, VoiceTurn.from_payload(lease.payload), lease)

    async def _own(self, agent: Agent, turn: VoiceTurn, lease: Lease) -> None:
        """Runs ``turn`` here (claimed, or taken over) while ``lease`` is held, then records
        its answer."""
        turn.task = asyncio.current_task()
        self._turns[turn.turn_id] = turn
        self.tasks.start(self._watch(turn), f"supersede watcher, call {turn.call_id}")
        try:
            try:
                await self._answer(agent, turn)
            except asyncio.CancelledError:
                # supersede() cancels a turn that has not reached Rasa yet; any other
                # cancellation is not ours to swallow (the turn is then taken over).
                if not turn.superseded:
                    raise
            if turn.open:
                turn.finish()
            await self.calls.finish(lease, turn)
        finally:
            if turn.open:
                turn.finish()
            self._turns.pop(turn.turn_id, None)

    def _supersede_here(self, turn_id: str) -> None:
        """Supersedes the turn of ``turn_id`` if it runs in this process."""
        old = self._turns.get(turn_id)
        if old is not None and old.open:
            old.supersede()

    async def _superseded_elsewhere(self, turn: VoiceTurn) -> bool:
        """Supersedes ``turn`` if a request (on any replica) marked it so; True once it is no
        longer open. Raises StateUnavailable."""
        if await self.calls.is_superseded(turn) and turn.open:
            turn.supersede()
        return not turn.open

    async def _watch(self, turn: VoiceTurn) -> None:
        """Stops a long turn once a request on another replica superseded it.

        Only turns still open after ``SUPERSEDE_POLL_SECONDS`` are polled: a rule-based turn is
        over before VAPI could re-POST, and this keeps Redis off the fast path.
        """
        while turn.open:
            await asyncio.sleep(SUPERSEDE_POLL_SECONDS)
            if not turn.open:
                return
            try:
                if await self._superseded_elsewhere(turn):
                    return
            except StateUnavailable:
                continue

    async def _answer(self, agent: Agent, turn: VoiceTurn) -> None:
        """Rasa's turn (or, if a replica processed it before it died, what that turn said),
        then its call controls; a failure is spoken as the apology."""
        message = UserMessage(
            turn.text,
            self.output(turn),
            turn.conversation_id,
            input_channel=VAPI,
            metadata=turn.metadata,
            message_id=turn.message_id,
        )
        before = functools.partial(self._before_processing, agent, turn)
        try:
            began = time.perf_counter()
            processed = await run_once(agent, message, before=before)
            if processed and turn.checks_seconds is not None:
                turn.rasa_seconds = time.perf_counter() - began - turn.checks_seconds
            elif not processed and turn.open:
                # Processed before, by a replica that died before answering.
                for reply in await replay(agent, message):
                    turn.add_bot_message(BotMessage.from_rasa(reply))
        except TurnFailed as error:
            logger.error("voice turn on call %s failed: %s", turn.call_id, error)
            turn.say(APOLOGY)
        except Exception:
            logger.exception("voice turn on call %s failed unexpectedly", turn.call_id)
            turn.say(APOLOGY)
        if not turn.open:
            return
        # Before the stream ends, so VAPI has its orders when the model turn is over.
        for control in turn.controls:
            if not await send_control(turn.call_id, str(turn.control_url), control.payload):
                turn.say(control.fallback_speech)

    async def _before_processing(
        self, agent: Agent, turn: VoiceTurn, tracker: DialogueStateTracker
    ) -> bool:
        """``run_once``'s check under the conversation lock, right before Rasa processes the
        turn: a turn superseded while it waited is dropped, and the turn it supersedes is
        reverted (same lock hold, so the dialogue holds one user turn for the utterance)."""
        if not turn.open:
            return False
        turn.start()
        began = time.perf_counter()
        if await self._superseded_elsewhere(turn):
            return False
        if turn.previous:
            await self._revert(agent, tracker, str(turn.previous["message_id"]))
        turn.checks_seconds = time.perf_counter() - began
        return True

    @staticmethod
    async def _revert(agent: Agent, tracker: DialogueStateTracker, message_id: str) -> None:
        for event in reversed(tracker.events):
            if isinstance(event, UserUtteranceReverted):
                return
            if isinstance(event, UserUttered):
                if event.message_id == message_id:
                    # The revert also takes back the action_listen before the user message;
                    # listening again leaves the dialogue exactly as it was before it.
                    tracker.update(UserUtteranceReverted())
                    tracker.update(ActionExecuted(ACTION_LISTEN_NAME))
                    await processor_of(agent).save_tracker(tracker)
                return

    async def _replay(
        self, agent: Agent, turn: VoiceTurn, record: Dict[str, Any], queue: asyncio.Queue
    ) -> None:
        """A duplicate: the recorded answer, waiting for it while another replica runs the
        turn, or taking the turn over once that replica stopped renewing its lease. (Counted
        as a duplicate where its claim found the turn recorded.)"""
        deadline = time.monotonic() + self.duplicate_wait_seconds
        while record.get("state") == "running" and time.monotonic() < deadline:
            local = self._turns.get(turn.turn_id)
            if local is not None:
                local.listen(queue)
                return
            try:
                lease = await self.calls.take_over(turn.conversation_id, turn.turn_id)
                if lease is not None:
                    await self._take_over(agent, lease, queue)
                    return
                await asyncio.sleep(REPLAY_POLL_SECONDS)
                record = await self.calls.answer(turn.conversation_id, turn.turn_id)
            except StateUnavailable as error:
                logger.error("call %s: duplicate turn: %s", turn.call_id, error)
                break
        if record.get("state") == "running":
            logger.warning("call %s: duplicate of a turn that did not finish", turn.call_id)
            queue.put_nowait(APOLOGY)
        for speech in record.get("spoken") or []:
            queue.put_nowait(speech)
        queue.put_nowait(END)

    async def _take_over(self, agent: Agent, lease: Lease, queue: asyncio.Queue) -> None:
        """Answers the caller with the turn a dead replica left (this request's ``queue``)."""
        turn = VoiceTurn.from_payload(lease.payload)
        logger.warning("call %s: turn taken over (attempt %d)", turn.call_id, lease.attempt)
        metrics.TAKEOVERS.labels(kind=lease.kind).inc()
        turn.listen(queue)
        async with self.calls.turns.held(lease):
            await self._own(agent, turn, lease)
