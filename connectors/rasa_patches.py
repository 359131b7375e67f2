"""Our patches of Rasa 3.6.21: four to its turn, and one to its agent, so a tracker store
failure reaches the channel.

A 400-turn profile of the Rasa server put three costs on every turn that neither the
tracker window (connectors/tracker_store.py) nor any setting removes:

- **The turn context as a remote call.** ``action_extract_turn_context`` (the custom slot
  mapping of ``channel``, ``interrupted``, ``unheard``, ``offer``) made one action-server round
  trip per user message: Rasa serialises the tracker and the domain, the action server parses
  them. Its logic is pure (omnichannel/turn_context.py), so ``action_extract_slots`` runs it in
  process instead (:data:`IN_PROCESS_MAPPINGS`).
- **The reply schema checked against its metaschema on every call.** ``RemoteAction`` validates
  each action server reply with ``jsonschema.validate``, which first checks the schema itself:
  55-75 ms per call on the profiled machine, against 0.8 ms for a validator built once, which
  finds the same errors (same ``best_match``, same message).
- **History for the actions that quote the conversation.** With a windowed tracker, an action
  that needs the whole session (the LLM fallback's prompt) gets it from the tracker store's
  copy of the session (:func:`send_history_to`); every other action gets the window only.

And one for turns under load:

- **A turn's slot lent out while Rasa waits on a remote endpoint** (``EndpointConfig.request``:
  the action server, an NLG server): a slow action (the LLM) does not keep the process's other
  turns waiting for a slot (:mod:`connectors.turns.slots`).

:func:`install` also installs :mod:`connectors.rasa_speedups` (work a turn repeats, removed with
the same results). The patches replace methods on Rasa's classes, so they are tied to the
version they were read from: :func:`install` refuses any other Rasa version rather than patch
code it has not seen. The tracker store installs them (``rasa_patches: true``, the default),
since Rasa builds it in every server process before the first turn.

- **Loud state failures** (:func:`install_loud_state_failures`): Rasa's agent wraps every tracker
  store in ``FailSafeTrackerStore``, which answers a failed read with a fresh tracker and saves
  into memory nobody reads; each connector's turn makes it raise instead (``run_turn``).
"""

from __future__ import annotations

import functools
import logging
import weakref
from typing import Any, Callable, Dict, FrozenSet, List, Optional

import rasa
from jsonschema.exceptions import ValidationError, best_match
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from rasa.core.actions.action import ActionExtractSlots, RemoteAction
from rasa.core.tracker_store import FailSafeTrackerStore, TrackerStore
from rasa.shared.constants import DOCS_BASE_URL
from rasa.shared.core.events import BotUttered, Event, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import EndpointConfig

from connectors import rasa_speedups
from connectors.turns.slots import while_waiting
from omnichannel.redis_client import StateUnavailable
from omnichannel.turn_context import TURN_SLOTS, TurnFacts, turn_context_slots

logger = logging.getLogger(__name__)

#: The Rasa version whose code these patches were written against.
RASA_VERSION = "3.6.21"

HistorySource = Callable[[DialogueStateTracker], Optional[List[Event]]]

_original_run_custom_action = ActionExtractSlots._run_custom_action
#: The ``EndpointConfig.request`` that :func:`_endpoint_request` calls: the one it replaced when
#: installed (tracing's, which adds the ``traceparent`` header, when tracing was installed first).
_inner_endpoint_request = [EndpointConfig.request]
_original_action_call_format = RemoteAction._action_call_format


def turn_context_events(tracker: DialogueStateTracker) -> List[Event]:
    """The turn context's SlotSet events, computed from Rasa's own tracker."""
    latest = tracker.latest_message
    bot_events: List[Dict[str, Any]] = []
    users = 0
    for event in reversed(tracker.events):
        if isinstance(event, UserUttered):
            users += 1
            if users == 2:
                break
        elif users == 1 and isinstance(event, BotUttered) and event.text:
            bot_events.append(event.as_dict())
    bot_events.reverse()
    facts = TurnFacts(
        metadata=latest.metadata if latest else None,
        input_channel=latest.input_channel if latest else None,
        intent=(latest.intent or {}).get("name") if latest else None,
        slots={name: tracker.get_slot(name) for name in TURN_SLOTS},
        bot_events=bot_events,
    )
    return [SlotSet(name, value) for name, value in turn_context_slots(facts)]


#: Custom slot mapping actions that run inside the Rasa process, by name.
IN_PROCESS_MAPPINGS: Dict[str, Callable[[DialogueStateTracker], List[Event]]] = {
    "action_extract_turn_context": turn_context_events,
}


async def _run_custom_action(
    self: ActionExtractSlots,
    custom_action: str,
    output_channel: Any,
    nlg: Any,
    tracker: DialogueStateTracker,
    domain: Any,
) -> List[Event]:
    in_process = IN_PROCESS_MAPPINGS.get(custom_action)
    if in_process is None:
        return await _original_run_custom_action(
            self, custom_action, output_channel, nlg, tracker, domain
        )
    return in_process(tracker)


@functools.cache
def response_validator() -> Validator:
    """The validator of action server replies, with its schema checked once."""
    schema = RemoteAction.action_response_format_spec()
    cls = validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _validate_action_result(self: RemoteAction, result: Dict[str, Any]) -> bool:
    error: Optional[ValidationError] = best_match(response_validator().iter_errors(result))
    if error is None:
        return True
    error.message += (
        ". Failed to validate Action server response from API, "
        "make sure your response from the Action endpoint is valid. "
        "For more information about the format visit "
        f"{DOCS_BASE_URL}/custom-actions"
    )
    raise error


class _History:
    """Which actions get the whole session, and where it comes from (a store's method, held
    weakly so a replaced store is not kept alive)."""

    actions: FrozenSet[str] = frozenset()
    source: Optional[weakref.WeakMethod] = None


def send_history_to(actions: FrozenSet[str], source: HistorySource) -> None:
    """Calls to ``actions`` carry the events ``source`` returns (None: the tracker's own)."""
    _History.actions = actions
    _History.source = weakref.WeakMethod(source)


def _action_call_format(
    self: RemoteAction, tracker: DialogueStateTracker, domain: Any
) -> Dict[str, Any]:
    payload = _original_action_call_format(self, tracker, domain)
    if self.name() in _History.actions and _History.source is not None:
        source = _History.source()
        history = source(tracker) if source is not None else None
        if history is not None:
            payload["tracker"]["events"] = [event.as_dict() for event in history]
    return payload


async def _endpoint_request(self: EndpointConfig, *args: Any, **kwargs: Any) -> Any:
    return await while_waiting(_inner_endpoint_request[0](self, *args, **kwargs))


# Copied by functools.wraps onto any wrapper of this one: found there, it is already installed.
_endpoint_request.lends_turn_slot = True  # type: ignore[attr-defined]


def install() -> None:
    """Applies the patches (idempotent); raises RuntimeError on another Rasa version."""
    if rasa.__version__ != RASA_VERSION:
        raise RuntimeError(
            f"connectors/rasa_patches.py targets Rasa {RASA_VERSION}, found {rasa.__version__}: "
            "re-read the patched methods in the new version, or set rasa_patches: false"
        )
    # Patching methods is the point here (mypy's method-assign warns against it in general).
    ActionExtractSlots._run_custom_action = _run_custom_action  # type: ignore[method-assign]
    RemoteAction._validate_action_result = _validate_action_result  # type: ignore[method-assign]
    RemoteAction._action_call_format = _action_call_format  # type: ignore[method-assign]
    if not getattr(EndpointConfig.request, "lends_turn_slot", False):
        # Wraps whatever is there (tracing may have wrapped it first), never the import's copy.
        _inner_endpoint_request[0] = EndpointConfig.request
        EndpointConfig.request = _endpoint_request  # type: ignore[method-assign]
    rasa_speedups.install()


def install_loud_state_failures(agent: Any) -> None:
    """Makes the agent's tracker store raise StateUnavailable instead of failing silently.

    Rasa's Agent wraps every tracker store in FailSafeTrackerStore, which saves into an
    in-memory store nobody reads and answers reads with a fresh tracker when the real store
    fails: the customer would get a reply whose state was never saved. Its error callback runs
    inside its ``except`` block, before any fallback, so raising there stops it. Idempotent.
    Accepts an Agent (anything with ``tracker_store``) or a tracker store itself.
    """
    store = getattr(agent, "tracker_store", agent)
    if isinstance(store, FailSafeTrackerStore):
        store._on_tracker_store_error = _raise_state_unavailable
    elif not isinstance(store, TrackerStore):
        raise TypeError(f"expected a Rasa Agent or TrackerStore, got {type(agent).__name__}")


def _raise_state_unavailable(error: Exception) -> None:
    if isinstance(error, StateUnavailable):
        raise error
    raise StateUnavailable(f"tracker store failed ({type(error).__name__})") from error
