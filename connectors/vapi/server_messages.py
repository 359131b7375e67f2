"""What VAPI tells us about a call (server messages), and what we answer.

Only ``assistant-request``, ``tool-calls``, ``function-call`` and ``transfer-destination-request``
expect an answer; the others are recorded (``end-of-call-report``, ``user-interrupted``) or
logged (``status-update``) and answered ``{}``, like any type we do not know.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from rasa.core.channels.channel import CollectingOutputChannel
from rasa.shared.core.events import SlotSet

from connectors.event_log.reading import CALL_REPORT_SLOT
from connectors.handoff.engine import handoff_engine
from connectors.rasa_patches import install_loud_state_failures
from connectors.turns.run import processor_of
from connectors.vapi.callbacks import CallbackCalls
from connectors.vapi.callers import Callers
from connectors.vapi.greeting import Greeter
from connectors.vapi.state import CallStore
from connectors.vapi.tools import run_tool
from connectors.vapi.wire import (
    Artifact,
    Call,
    ServerMessage,
    ToolCall,
    ToolFunction,
    custom_llm_assistant,
)
from omnichannel.channels import VOICE
from omnichannel.orders import Customer
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable
from omnichannel.settings import Settings

if TYPE_CHECKING:
    from rasa.core.agent import Agent

logger = logging.getLogger(__name__)

#: Transcripts stored with the conversation are cut to this many characters (the tail).
TRANSCRIPT_MAX_CHARS = 20000


class ServerMessages:
    """Answers server messages. State failures raise (StateUnavailable, LockError, Redis's):
    the route turns them into a 503, never an answer as if the message had been recorded."""

    def __init__(
        self,
        settings: Settings,
        callers: Callers,
        greeter: Greeter,
        calls: CallStore,
        callback_calls: Optional[CallbackCalls] = None,
    ) -> None:
        self.settings = settings
        self.callers = callers
        self.greeter = greeter
        self.calls = calls
        self.callback_calls = callback_calls or CallbackCalls()

    async def handle(self, agent: Agent, message: ServerMessage) -> Dict[str, Any]:
        if message.type == "assistant-request":
            return await self.assistant_request(agent, message)
        if message.type == "tool-calls":
            return self.tool_calls(message)
        if message.type == "function-call":
            return self.function_call(message)
        if message.type == "transfer-destination-request":
            return self.transfer_destination()
        if message.type == "end-of-call-report":
            await self.end_of_call_report(agent, message)
            if message.call:
                await self.callback_calls.status(message.call, "ended", message.ended_reason)
        elif message.type == "user-interrupted":
            await self.user_interrupted(message)
        elif message.type == "status-update":
            logger.info(
                "call %s: status %s%s",
                message.call.call_id if message.call else "?",
                message.status,
                f" ({message.ended_reason})" if message.ended_reason else "",
            )
            if message.call:
                await self.callback_calls.status(message.call, message.status, message.ended_reason)
        return {}

    async def assistant_request(self, agent: Agent, message: ServerMessage) -> Dict[str, Any]:
        """The assistant for this call: our custom LLM, greeting the caller by what we know.

        The answer carries no credential: VAPI authenticates the custom-LLM requests with the
        custom-LLM credential stored in its dashboard (``VAPI_CUSTOM_LLM_KEY``, which the channel
        requires). It once carried the server secret when that key was unset, and a captured
        signed assistant-request, replayed within the signature's five minutes, then yielded
        the secret that signs every server message."""
        address = self.callers.known_caller(message.call or Call.parse_obj({}), message.customer)
        return {
            "assistant": custom_llm_assistant(
                self.settings.public_base_url,
                await self.greeter.assistant_name(agent),
                await self.greeter.greeting(agent, address),
            )
        }

    def tool_calls(self, message: ServerMessage) -> Dict[str, Any]:
        """Each tool call answered with a ``result``, or refused with an ``error``, on its own."""
        caller = self._caller(message)
        results = []
        for call in message.tool_call_list or message.tool_calls or []:
            entry: Dict[str, Any] = {"toolCallId": call.id or "", "name": call.tool_name}
            entry.update(run_tool(call, caller))
            results.append(entry)
        return {"results": results}

    def function_call(self, message: ServerMessage) -> Dict[str, Any]:
        """The legacy ``function-call`` message: one call, answered ``{"result": …}``."""
        function = message.function_call or ToolFunction()
        return run_tool(
            ToolCall(name=function.name, arguments=function.parameters), self._caller(message)
        )

    def _caller(self, message: ServerMessage) -> Customer:
        """Who the tools answer for: the caller's number, or the user a signed token names, as
        the call's turns know them; neither for an anonymous caller or a message naming no
        call."""
        address = self.callers.known_caller(message.call or Call.parse_obj({}), message.customer)
        if address is None:
            return Customer()
        if address.scheme == "tel":
            return Customer(phone=address.value)
        if address.scheme == "user":
            return Customer(user_id=address.value)
        return Customer()

    def transfer_destination(self) -> Dict[str, Any]:
        """Where a transfer goes when VAPI asks: the same support line the hand-off uses."""
        if not self.settings.handoff_phone_number:
            return {"error": "No transfer destination is configured."}
        return {"destination": {"type": "number", "number": self.settings.handoff_phone_number}}

    async def end_of_call_report(self, agent: Agent, message: ServerMessage) -> None:
        """Stores the call's report in the ``last_call`` slot, under the conversation lock."""
        found = await self._conversation_of(message, create=True)
        if found is None or not found[1].call_id:
            logger.warning("end-of-call-report without call id or customer: not stored")
            return
        conversation_id, call = found
        call_id = str(call.call_id)
        if not await self.calls.claim_report(conversation_id, call_id):
            logger.info("call %s: end-of-call report already stored; ignored", call_id)
            return
        try:
            await self._store_report(agent, conversation_id, call, message)
        except BaseException:
            await self.calls.release_report(conversation_id, call_id)
            raise

    async def _store_report(
        self, agent: Agent, conversation_id: str, call: Call, message: ServerMessage
    ) -> None:
        artifact = message.artifact or Artifact.parse_obj({})
        transcript = artifact.transcript or message.transcript
        if not isinstance(transcript, str):
            transcript = None
        report = {
            "call_id": call.call_id,
            "ended_reason": message.ended_reason,
            "summary": (message.analysis.summary if message.analysis else None) or message.summary,
            "transcript": transcript[-TRANSCRIPT_MAX_CHARS:] if transcript else None,
            "recording_url": artifact.recording_url or message.recording_url,
            "stereo_recording_url": artifact.stereo_recording_url or message.stereo_recording_url,
            "started_at": message.started_at,
            "ended_at": message.ended_at,
            "duration_seconds": message.duration_seconds,
            "reported_at": time.time(),
        }
        install_loud_state_failures(agent)
        try:
            async with agent.lock_store.lock(conversation_id):
                # A caller who hung up before saying anything has no session yet: start it,
                # so the report sits in a proper session like any other event.
                processor = processor_of(agent)
                tracker = await processor.fetch_tracker_with_initial_session(
                    conversation_id, CollectingOutputChannel(), {"channel": VOICE}
                )
                tracker.update(SlotSet(CALL_REPORT_SLOT, report))
                await processor.save_tracker(tracker)
        except REDIS_FAILURES as error:
            raise StateUnavailable(f"storing the call report: {type(error).__name__}") from error
        logger.info("call %s: end-of-call report stored (%s)", call.call_id, message.ended_reason)
        # A caller's queued hand-off now has the call's transcript: agents' pages and helpdesks
        # see it at once.
        await handoff_engine().conversation_changed(conversation_id)

    async def user_interrupted(self, message: ServerMessage) -> None:
        """Noted for the call's next turn: it tells a barge-in even when most was heard."""
        found = await self._conversation_of(message, create=False)
        if found is None or not found[1].call_id:
            return
        conversation_id, call = found
        await self.calls.record_interruption(conversation_id, str(call.call_id), time.time())

    async def _conversation_of(
        self, message: ServerMessage, create: bool
    ) -> Optional[Tuple[str, Call]]:
        call = message.call or Call.parse_obj({})
        callback = await self.callback_calls.callback_of(call)
        if callback is not None:
            return callback.conversation_id, call
        address = self.callers.known_caller(call, message.customer)
        if address is None:
            return None
        if create:
            return await self.callers.identity.resolve_conversation(address, channel=VOICE), call
        conversation_id = await self.callers.identity.lookup(address)
        return (conversation_id, call) if conversation_id else None
