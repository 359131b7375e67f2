"""One voice turn: what the assistant says in answer to one caller utterance, and its life.

A turn runs detached from the HTTP request that started it and fans its speech out to every
listener (the request's stream, duplicates of the request). Its life is an explicit state
machine; each transition is one method, and a method refuses a transition its state does not
allow (:class:`IllegalTransition`)::

    CLAIMED ──start()──► RUNNING ──finish()──► FINISHED
       │                    │
       └──── supersede() ───┴──► SUPERSEDED

CLAIMED: the turn is this request's to answer and waits for the conversation's lock.
RUNNING: Rasa is processing it. FINISHED: it said all it will say. SUPERSEDED: a longer
utterance took over (see hearing.supersedes); nothing more is said, its streams end, and a
turn still waiting for the lock is cancelled so it never reaches Rasa.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Dict, FrozenSet, List, Optional

from connectors.vapi.call_control import END_CALL, control_payload, requested_control
from connectors.vapi.hearing import SpokenTurn
from omnichannel.channels import VOICE
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.voice import render_voice_message

logger = logging.getLogger(__name__)

#: What the caller hears when a turn fails (Redis, action server): never silence.
APOLOGY = "Sorry, I'm having trouble right now. Please try again in a moment."
#: Ends a listener's queue: the turn will say nothing more.
END = None


class TurnState(Enum):
    CLAIMED = "claimed"
    RUNNING = "running"
    SUPERSEDED = "superseded"
    FINISHED = "finished"


_ALLOWED: Dict[TurnState, FrozenSet[TurnState]] = {
    TurnState.CLAIMED: frozenset({TurnState.RUNNING, TurnState.SUPERSEDED, TurnState.FINISHED}),
    TurnState.RUNNING: frozenset({TurnState.SUPERSEDED, TurnState.FINISHED}),
    TurnState.SUPERSEDED: frozenset(),
    TurnState.FINISHED: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A transition the turn's state does not allow (a bug in the caller, never the caller's)."""


@dataclass(frozen=True)
class PendingControl:
    """A Live Call Control request, made when Rasa's turn is over (before the stream ends)."""

    payload: Dict[str, Any]
    #: Streamed instead when VAPI could not be asked: the caller never hears silence.
    fallback_speech: str


@dataclass(eq=False)
class VoiceTurn:
    conversation_id: str
    call_id: str
    #: The turn's id (its answer record in state.py) and the Redis key of the call's state.
    turn_id: str
    call_key: str
    #: Index of the last user message among the call's user messages.
    ordinal: int
    #: The last user message (with the call and ordinal, the turn's key).
    last_text: str
    control_url: Optional[str]
    #: Index of the first user message of the utterance (see :meth:`hear`).
    first_ordinal: int = field(init=False, default=0)
    #: The utterance Rasa gets: the unanswered user messages up to the last one, joined.
    text: str = field(init=False, default="")
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started_at: float = field(default_factory=time.time)
    #: The UserMessage metadata (channel, address, call, barge-in).
    metadata: Dict[str, Any] = field(default_factory=dict)
    #: The call's record of the turn this one supersedes (reverted before this one is processed).
    previous: Optional[Dict[str, Any]] = None
    spoken: List[str] = field(default_factory=list)
    controls: List[PendingControl] = field(default_factory=list)
    #: Time in what ``agent.handle_message`` does (lock + processor), for the latency metrics.
    rasa_seconds: Optional[float] = None
    #: Time the checks before processing took (set once they pass: the turn is processed here).
    checks_seconds: Optional[float] = None
    #: The task running the turn (cancelled when superseded before it reached Rasa).
    task: Optional[asyncio.Task] = None
    state: TurnState = field(init=False, default=TurnState.CLAIMED)
    _listeners: List[asyncio.Queue] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        # Until :meth:`hear` says otherwise, the utterance is the last user message alone.
        self.first_ordinal = self.ordinal
        self.text = self.last_text

    #: What a replica taking the turn over needs to run it again (see :meth:`from_payload`).
    _PAYLOAD = (
        "conversation_id",
        "call_id",
        "turn_id",
        "call_key",
        "ordinal",
        "last_text",
        "control_url",
        "first_ordinal",
        "text",
        "request_id",
        "message_id",
        "started_at",
        "metadata",
        "previous",
    )

    def payload(self) -> Dict[str, Any]:
        """The turn as recorded in its answer record while it runs (JSON)."""
        return {name: getattr(self, name) for name in self._PAYLOAD}

    @classmethod
    def from_payload(cls, payload: Dict[str, Any]) -> VoiceTurn:
        """The turn a dead replica left, to be run (or delivered) by this one: same request and
        message ids, so the event log and the call state recognise it."""
        init = ("conversation_id", "call_id", "turn_id", "call_key", "ordinal", "last_text")
        turn = cls(
            **{name: payload[name] for name in init},
            control_url=payload.get("control_url"),
            request_id=payload["request_id"],
            message_id=payload["message_id"],
            started_at=payload["started_at"],
            metadata=payload.get("metadata") or {},
            previous=payload.get("previous"),
        )
        turn.first_ordinal = payload["first_ordinal"]
        turn.text = payload["text"]
        return turn

    # -- transitions ------------------------------------------------------------------------------

    def _move(self, to: TurnState) -> TurnState:
        if to not in _ALLOWED[self.state]:
            raise IllegalTransition(f"voice turn {self.state.value} cannot become {to.value}")
        was, self.state = self.state, to
        return was

    def start(self) -> None:
        """Rasa takes the turn (it holds the conversation's lock)."""
        self._move(TurnState.RUNNING)

    def supersede(self) -> None:
        """A longer utterance took over: say nothing more, end the streams, and cancel the
        turn if it has not reached Rasa yet."""
        was = self._move(TurnState.SUPERSEDED)
        logger.info("call %s: turn superseded by a longer utterance", self.call_id)
        self._end_listeners()
        if was is TurnState.CLAIMED and self.task is not None:
            self.task.cancel()

    def finish(self) -> None:
        """The turn said all it will say."""
        self._move(TurnState.FINISHED)
        self._end_listeners()

    @property
    def open(self) -> bool:
        """Still claimed or running: it may say more, and may still be superseded."""
        return self.state in (TurnState.CLAIMED, TurnState.RUNNING)

    @property
    def superseded(self) -> bool:
        return self.state is TurnState.SUPERSEDED

    # -- speech ---------------------------------------------------------------------------------

    def hear(self, spoken: SpokenTurn, max_chars: int) -> None:
        """The utterance this turn answers (its tail, at most ``max_chars``)."""
        self.text = spoken.text[-max_chars:]
        self.first_ordinal = spoken.first_ordinal

    def listen(self, queue: Optional[asyncio.Queue] = None) -> asyncio.Queue:
        """A queue (``queue``, or a new one) of everything this turn says, from its start;
        :data:`END` marks the end."""
        queue = asyncio.Queue() if queue is None else queue
        for speech in self.spoken:
            queue.put_nowait(speech)
        if not self.open:
            queue.put_nowait(END)
        self._listeners.append(queue)
        return queue

    def say(self, speech: str) -> None:
        if not speech or not self.open:
            return
        self.spoken.append(speech)
        for queue in self._listeners:
            queue.put_nowait(speech)

    def _end_listeners(self) -> None:
        for queue in self._listeners:
            queue.put_nowait(END)

    def add_bot_message(self, message: BotMessage) -> None:
        """One of Rasa's bot messages: spoken, or kept as a call control to make at the end."""
        if not message.is_for(VOICE):
            return
        control = requested_control(message)
        speech = render_voice_message(message)
        if control is None:
            self.say(speech)
            return
        if not self.control_url:
            logger.warning(
                "call %s: cannot carry out %s, the request had no call.monitor.controlUrl",
                self.call_id,
                control.get("call_control"),
            )
            self.say(speech)
            return
        # A goodbye is still right if the hang-up fails; a transfer that did not happen is not
        # announced, the caller hears the apology instead.
        fallback = speech if control["call_control"] == END_CALL else APOLOGY
        self.controls.append(PendingControl(control_payload(control, speech), fallback))

    @property
    def sent_text(self) -> str:
        return " ".join(self.spoken)
