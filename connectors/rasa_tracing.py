"""Spans inside Rasa 3.6.21's turn, and the trace carried to the action server.

The turn's own parts have no hook in Rasa: NLU, the policies' prediction, each action and the
tracker's read and save run inside ``MessageProcessor``. :func:`install` wraps those methods so
each runs in a span (the lock wait is the lock store's own span), and wraps
``EndpointConfig.request`` so every call to the action server (and any other endpoint Rasa
calls) carries the W3C ``traceparent`` header of the action's span: the action server's spans
then sit inside Rasa's.

Installed only when tracing is on (``omnichannel.tracing.enabled()``), so a server without
tracing runs Rasa's methods untouched. Like :mod:`connectors.rasa_patches`, tied to the version
read: another Rasa version is refused rather than patched blind.

Attributes are bounded: intent, action and policy names come from the trained domain, never
from what the customer typed.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable, Dict, Optional

import rasa
from rasa.core.actions.action import RemoteAction
from rasa.core.processor import MessageProcessor
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.utils.endpoints import EndpointConfig

from connectors.rasa_patches import RASA_VERSION
from omnichannel import tracing

_installed = False


def _intent_of(parse_data: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    intent = (parse_data or {}).get("intent") or {}
    return {
        "rasa.intent": intent.get("name"),
        "rasa.intent_confidence": round(float(intent.get("confidence") or 0.0), 4),
    }


def _traced_parse(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def parse_message(self: MessageProcessor, message: Any, *args: Any, **kw: Any) -> Any:
        with tracing.span("rasa.nlu") as span:
            parse_data = await original(self, message, *args, **kw)
            span.set(**_intent_of(parse_data))
            return parse_data

    return parse_message


def _traced_prediction(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def predict(self: MessageProcessor, tracker: Any) -> Any:
        began = time.time_ns()
        prediction = original(self, tracker)
        index = prediction.max_confidence_index
        names = self.domain.action_names_or_texts
        action = names[index] if 0 <= index < len(names) else None
        if action != ACTION_LISTEN_NAME:
            # Recorded once known (the policies start no span): the prediction that ends every
            # turn, listening, gets none, as listening itself does not (one span a turn less).
            tracing.record(
                "rasa.policy",
                began,
                {
                    "rasa.policy": prediction.policy_name,
                    "rasa.action": action,
                    "rasa.confidence": round(float(prediction.max_confidence), 4),
                },
            )
        return prediction

    return predict


def _traced_action(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def run_action(self: MessageProcessor, action: Any, *args: Any, **kw: Any) -> Any:
        if action.name() == ACTION_LISTEN_NAME:
            # Listening does nothing to time; the policy span that chose it is there.
            return await original(self, action, *args, **kw)
        attributes = {
            "rasa.action": action.name(),
            "rasa.action_remote": isinstance(action, RemoteAction),
        }
        with tracing.span("rasa.action", attributes):
            return await original(self, action, *args, **kw)

    return run_action


def _traced_store_call(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def call(self: MessageProcessor, *args: Any, **kw: Any) -> Any:
        with tracing.span(name):
            return await original(self, *args, **kw)

    return call


def _traced_request(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def request(self: EndpointConfig, *args: Any, **kw: Any) -> Any:
        headers = dict(kw.pop("headers", None) or {})
        tracing.inject(headers)
        return await original(self, *args, headers=headers, **kw)

    return request


def install() -> None:
    """Wraps the methods of the module docstring (idempotent; only with tracing on)."""
    global _installed
    if _installed or not tracing.enabled():
        return
    if rasa.__version__ != RASA_VERSION:
        raise RuntimeError(
            f"connectors/rasa_tracing.py targets Rasa {RASA_VERSION}, found {rasa.__version__}"
        )
    # Wrapping methods is the point here (mypy's method-assign warns against it in general).
    wrapped = {
        "parse_message": _traced_parse(MessageProcessor.parse_message),
        "_predict_next_with_tracker": _traced_prediction(
            MessageProcessor._predict_next_with_tracker
        ),
        "_run_action": _traced_action(MessageProcessor._run_action),
        "get_tracker": _traced_store_call("rasa.tracker.read", MessageProcessor.get_tracker),
        "save_tracker": _traced_store_call("rasa.tracker.save", MessageProcessor.save_tracker),
    }
    for name, method in wrapped.items():
        setattr(MessageProcessor, name, method)
    EndpointConfig.request = _traced_request(EndpointConfig.request)  # type: ignore[method-assign]
    _installed = True
