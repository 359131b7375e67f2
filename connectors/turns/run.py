"""Running one user turn through Rasa so that failures reach the channel.

Rasa hides three kinds of failure from its channels: a tracker store error is swallowed by
`FailSafeTrackerStore`; an action server error is logged by the processor, which then carries on
as if the action had said nothing; and a custom slot mapping that cannot reach the action server
is only a warning. Each connector runs its turns through `run_turn`, which surfaces all of them as
`TurnFailed`, so the channel answers with a 503 or a spoken/texted apology instead of silence.

It is also where a customer's text stops being able to steer Rasa directly. Rasa reads any text
starting with ``/`` as an intent with entities (its ``RegexMessageHandler``: the text
``/request_refund{"order_number": "55555"}`` overrides NLU and sets the slot), on every channel.
`run_turn` escapes such text unless the channel vouches for it as a payload (a button the bot
offered, an SMS keyword the connector maps to an intent), so what a customer types reaches NLU
as the text it is, redacted first unless the business keeps the original text in its event
log (:mod:`omnichannel.redaction`, ``EVENT_LOG_TEXT``). Each turn runs in a ``turn`` span with
its channel and outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, List, Optional

from rasa.core.channels.channel import UserMessage
from rasa.core.lock_store import LockError

from connectors.rasa_patches import install_loud_state_failures
from omnichannel import metrics, tracing
from omnichannel.channels import kind_of
from omnichannel.insight import recorder as insight
from omnichannel.redaction import redactor
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable

if TYPE_CHECKING:
    from rasa.core.agent import Agent
    from rasa.core.processor import MessageProcessor

logger = logging.getLogger(__name__)

#: Put in front of a customer's text that starts with "/": invisible (WORD JOINER), and not
#: whitespace to ``str.strip``, so Rasa's check for the "/" prefix no longer matches, while the
#: tokenizer gives the same tokens and the text looks the same in every history.
INTENT_ESCAPE = "\u2060"

_turn_failures: ContextVar[Optional[List[str]]] = ContextVar("turn_failures", default=None)


@dataclass
class TurnFailed(Exception):
    """A turn could not be completed as designed; ``reason`` is short and safe to log."""

    reason: str
    #: True when nothing of the turn was processed, so the channel may ask the sender to retry.
    before_processing: bool = False

    def __str__(self) -> str:
        return self.reason


class _ActionFailureCapture(logging.Handler):
    """Notes Rasa's logged action failures against the turn (task) that caused them."""

    MARKERS = ("Encountered an exception while running action", "Failed to execute custom action")

    def emit(self, record: logging.LogRecord) -> None:
        failures = _turn_failures.get()
        if failures is None:
            return
        message = record.getMessage()
        if any(marker in message for marker in self.MARKERS):
            failures.append(message.split("\n", 1)[0][:200])


_capture = _ActionFailureCapture(level=logging.WARNING)
for _name in ("rasa.core.processor", "rasa.core.actions.action"):
    logging.getLogger(_name).addHandler(_capture)


def processor_of(agent: Agent) -> MessageProcessor:
    """The agent's message processor, which Rasa sets once a model is loaded: a turn that
    arrives before fails loudly, with nothing processed (the sender may retry)."""
    if agent.processor is None:
        raise TurnFailed("the model is not loaded yet", before_processing=True)
    return agent.processor


def as_text(text: str) -> str:
    """A customer's ``text`` as Rasa must take it: as text, never as ``/intent{entities}``."""
    stripped = text.strip()
    return INTENT_ESCAPE + stripped if stripped.startswith("/") else text


async def run_turn(
    agent: Agent,
    on_new_message: Callable[[UserMessage], Awaitable[Any]],
    message: UserMessage,
    *,
    trusted_payload: bool = False,
) -> None:
    """Hand ``message`` to Rasa; raise TurnFailed if its state or actions failed.

    ``trusted_payload`` is for text the channel vouches for (a payload the bot offered and the
    customer chose, an intent the connector itself sends); any other text is the customer's
    and is escaped with :func:`as_text` first.
    """
    if not trusted_payload and message.text:
        message.text = as_text(message.text)
        if redactor().redacts_event_log:
            message.text = redactor().redact(message.text)
    install_loud_state_failures(agent)
    failures: List[str] = []
    token = _turn_failures.set(failures)
    outcome = metrics.TURN_ERROR
    channel = kind_of(message.metadata, message.input_channel)
    started = time.perf_counter()
    turn_span = tracing.span("turn", {"channel": channel or metrics.OTHER_CHANNEL})
    turn_span.__enter__()
    clock = insight.turn_clock()
    try:
        try:
            await on_new_message(message)
        except LockError as error:
            outcome = metrics.TURN_BUSY
            raise TurnFailed(f"conversation busy: {error}", before_processing=True) from error
        except StateUnavailable as error:
            outcome = metrics.TURN_STATE_UNAVAILABLE
            raise TurnFailed(f"conversation state unavailable: {error}") from error
        except REDIS_FAILURES as error:
            outcome = metrics.TURN_STATE_UNAVAILABLE
            raise TurnFailed(f"conversation state unavailable: {type(error).__name__}") from error
        except asyncio.CancelledError:
            outcome = metrics.TURN_CANCELLED
            raise
        finally:
            _turn_failures.reset(token)
        if failures:
            outcome = metrics.TURN_ACTION_FAILED
            raise TurnFailed("action server failed: " + "; ".join(failures))
        outcome = metrics.TURN_OK
    finally:
        insight.turn_clock_reset(clock)
        turn_span.set(outcome=outcome)
        turn_span.__exit__(None, None, None)
        metrics.turn_ended(channel, outcome, time.perf_counter() - started)
