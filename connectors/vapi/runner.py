"""Answering one caller utterance through Rasa exactly once, whatever VAPI re-POSTs.

- **Duplicates.** A turn is keyed by (call id, ordinal of its last user message, its text); the
  first request claims the key in Redis (call_state.py) and its answer is recorded there; a
  duplicate replays that answer, live if the turn still runs (here or on another replica),
  without a second Rasa turn.
- **Superseded turns.** When the caller keeps talking, VAPI cancels the request and POSTs again
  with a longer utterance (hearing.supersedes decides). The new turn takes over the call's "in
  flight" record and the old one is superseded (turn.py): on this replica at once, on another
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
from typing import Any, Awaitable, Callable, Dict, Optional, Sequence

from rasa.core.channels.channel import OutputChannel, UserMessage
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.events import ActionExecuted, UserUtteranceReverted, UserUttered

from connectors.turns import TurnFailed, run_turn
from connectors.vapi.call_control import send_control
from connectors.vapi.call_state import CallStore
from connectors.vapi.hearing import SpokenTurn, barge_in, spoken_turn, supersedes
from connectors.vapi.turn import APOLOGY, END, VoiceTurn
from connectors.vapi.wire import USER_TEXT_MAX_CHARS, ChatMessage
from omnichannel import metrics
from omnichannel.channels import VAPI, VOICE
from omnichannel.redis_client import StateUnavailable
from omnichannel.tasks import BackgroundTasks

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
        #: Turns running in this process, by answer key (duplicates attach to them).
        self._turns: Dict[str, VoiceTurn] = {}

    async def start(
        self,
        agent: Any,
        turn: VoiceTurn,
        messages: Sequence[ChatMessage],
        metadata: Dict[str, Any],
    ) -> Started:
        """Claim ``turn`` and run it, or attach to the request that claimed it first.

        Claiming and running go on in a task of their own, which finishes even if VAPI drops
        the request. Raises StateUnavailable when the turn could not even be claimed.
        """
        started: asyncio.Future = asyncio.get_running_loop().create_future()
        work = self._claim_and_run(agent, turn, messages, metadata, started)
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
        agent: Any,
        turn: VoiceTurn,
        messages: Sequence[ChatMessage],
        metadata: Dict[str, Any],
        started: asyncio.Future,
    ) -> None:
        local = self._turns.get(turn.answer_key)
        if local is not None:
            started.set_result(Started(local.listen(), local, claimed=False))
            return
        try:
            claim = await self.calls.claim(turn)
        except StateUnavailable as error:
            started.set_exception(error)
            return
        if claim.call is None:
            queue: asyncio.Queue = asyncio.Queue()
            started.set_result(Started(queue, None, claimed=False))
            await self._replay(turn, claim.answer or {}, queue)
            return
        call = claim.call
        spoken = spoken_turn(messages, call.last_sent) or SpokenTurn(
            turn.ordinal, turn.ordinal, turn.last_text
        )
        turn.hear(spoken, USER_TEXT_MAX_CHARS)
        previous = None
        if supersedes(call.in_flight, turn.request_id, turn.last_text, spoken):
            previous = call.in_flight
            self._supersede_here(str(previous.get("answer_key")))
            await self.calls.mark_superseded(turn.call_key, str(previous.get("request")))
        heard = barge_in(
            call.last_sent, call.interrupted_at, messages, spoken, self.barge_in_threshold
        )
        if heard:
            metadata = {**metadata, "barge_in": heard}
            logger.info(
                "call %s: barge-in, caller heard %.0f%% of the last answer",
                turn.call_id,
                heard["heard_ratio"] * 100,
            )
        turn.task = asyncio.current_task()
        self._turns[turn.answer_key] = turn
        started.set_result(Started(turn.listen(), turn, claimed=True))
        self.tasks.start(self._watch(turn), f"supersede watcher, call {turn.call_id}")
        await self._run(agent, turn, metadata, previous)

    def _supersede_here(self, answer_key: str) -> None:
        """Supersedes the turn of ``answer_key`` if it runs in this process."""
        old = self._turns.get(answer_key)
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

    async def _run(
        self,
        agent: Any,
        turn: VoiceTurn,
        metadata: Dict[str, Any],
        previous: Optional[Dict[str, Any]],
    ) -> None:
        message = UserMessage(
            turn.text,
            self.output(turn),
            turn.conversation_id,
            input_channel=VAPI,
            metadata=metadata,
            message_id=turn.message_id,
        )
        handler = functools.partial(self._locked_turn, agent, turn, previous)
        try:
            await self._answer(agent, turn, handler, message)
        except asyncio.CancelledError:
            # supersede() cancels a turn that has not reached Rasa yet; any other
            # cancellation is not ours to swallow.
            if not turn.superseded:
                raise
        finally:
            if turn.open:
                turn.finish()
            self.tasks.start(self._store(turn), f"store the answer, call {turn.call_id}")

    async def _answer(
        self, agent: Any, turn: VoiceTurn, handler: Callable, message: UserMessage
    ) -> None:
        """Rasa's turn, then its call controls; a failure is spoken as the apology."""
        try:
            await run_turn(agent, handler, message)
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

    async def _locked_turn(
        self,
        agent: Any,
        turn: VoiceTurn,
        previous: Optional[Dict[str, Any]],
        message: UserMessage,
    ) -> None:
        """Rasa's ``agent.handle_message`` plus, in the same lock hold, two checks: a turn
        superseded while it waited is dropped, and the turn it supersedes is reverted.

        Turns do not go through Rasa's ``on_new_message`` handler for that reason; this does
        what it does (the lock, then ``processor.handle_message``) with the checks in between,
        and still runs through ``run_turn``, so failures stay loud."""
        began = time.perf_counter()
        async with agent.lock_store.lock(message.sender_id):
            turn.start()
            checks_began = time.perf_counter()
            if await self._superseded_elsewhere(turn):
                return
            if previous:
                await self._revert(agent, message.sender_id, str(previous["message_id"]))
            checks = time.perf_counter() - checks_began
            await agent.processor.handle_message(message)
        turn.rasa_seconds = time.perf_counter() - began - checks

    @staticmethod
    async def _revert(agent: Any, conversation_id: str, message_id: str) -> None:
        processor = agent.processor
        tracker = await processor.get_tracker(conversation_id)
        for event in reversed(tracker.events):
            if isinstance(event, UserUtteranceReverted):
                return
            if isinstance(event, UserUttered):
                if event.message_id == message_id:
                    # The revert also takes back the action_listen before the user message;
                    # listening again leaves the dialogue exactly as it was before it.
                    tracker.update(UserUtteranceReverted())
                    tracker.update(ActionExecuted(ACTION_LISTEN_NAME))
                    await processor.save_tracker(tracker)
                return

    async def _store(self, turn: VoiceTurn) -> None:
        try:
            await self.calls.store_answer(turn)
        finally:
            self._turns.pop(turn.answer_key, None)

    async def _replay(self, turn: VoiceTurn, record: Dict[str, Any], queue: asyncio.Queue) -> None:
        """A duplicate: the recorded answer, waiting for it while another replica runs it."""
        metrics.DEDUPE_HITS.labels(channel=VOICE).inc()
        deadline = time.monotonic() + self.duplicate_wait_seconds
        while record.get("state") == "running" and time.monotonic() < deadline:
            local = self._turns.get(turn.answer_key)
            if local is not None:
                source = local.listen()
                while True:
                    item = await source.get()
                    queue.put_nowait(item)
                    if item is END:
                        return
            await asyncio.sleep(REPLAY_POLL_SECONDS)
            try:
                record = await self.calls.answer(turn.answer_key)
            except StateUnavailable as error:
                logger.error("call %s: duplicate turn: %s", turn.call_id, error)
                break
        if record.get("state") == "running":
            logger.warning("call %s: duplicate of a turn that did not finish", turn.call_id)
        for speech in record.get("spoken") or []:
            queue.put_nowait(speech)
        queue.put_nowait(END)
