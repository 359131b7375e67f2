"""The VAPI channel for Rasa: its routes, its credentials.yml options, its output channel.

Routes under ``/webhooks/vapi``: ``POST /chat/completions`` (also
``/chat/completions/chat/completions``), VAPI's custom LLM, one caller turn in and the
assistant's speech out as an SSE stream; ``POST /events``, server messages; ``GET /``, health
(the turns' latency is in the Prometheus metrics, summed over the replicas there). Each route
authenticates (auth.py), parses (wire.py) and hands over: turns to turns.py, server messages to
server_messages.py.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional

from pydantic import confloat, conint, constr
from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from rasa.core.lock_store import LockError
from sanic import Blueprint, Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.http_limits import BodyRefused, guard_slow_headers, read_body
from connectors.vapi.auth import VapiAuth
from connectors.vapi.call_control import DEFAULT_CONTROL_HOSTS, control_policy
from connectors.vapi.callers import Callers
from connectors.vapi.greeting import Greeter
from connectors.vapi.hearing import dialogue
from connectors.vapi.latency import observe_turn
from connectors.vapi.server_messages import ServerMessages
from connectors.vapi.state import DEFAULT_TURN_LEASE_SECONDS, CallStore, call_key, turn_id
from connectors.vapi.stream import stream_speech, stream_static
from connectors.vapi.turns import TurnRunner
from connectors.vapi.voice_turn import APOLOGY, VoiceTurn
from connectors.vapi.wire import (
    MODEL_NAME,
    USER_TEXT_MAX_CHARS,
    BadRequest,
    Call,
    ChatCompletionRequest,
    ChunkWriter,
    openai_error,
    parse_completion_request,
    parse_server_message,
)
from omnichannel.channels import VAPI, VOICE
from omnichannel.identity import Address, IdentityStore
from omnichannel.leases import takeover
from omnichannel.options import ConnectorOptions
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable
from omnichannel.rendering.messages import BotMessage
from omnichannel.settings import Settings, load_settings
from omnichannel.tasks import BackgroundTasks

logger = logging.getLogger(__name__)

SECTION = "connectors.vapi.channel.VapiInput"


#: A host name, or ``*.`` and a domain.
ControlHost = constr(regex=r"^(\*\.)?[A-Za-z0-9.-]{1,253}$")


class VapiOptions(ConnectorOptions):
    """Tunables from credentials.yml (secrets come from the environment)."""

    #: Largest custom-LLM request / server message (VAPI resends the whole call history).
    max_request_bytes: conint(ge=1024, le=100_000_000) = 1_000_000
    max_event_bytes: conint(ge=1024, le=100_000_000) = 5_000_000
    #: VAPI gives assistant-request 7.5 s; our Redis reads get at most this.
    assistant_request_timeout: confloat(gt=0, le=7.0) = 2.0
    #: Below this share of our words heard, the caller cut the bot off.
    barge_in_threshold: confloat(ge=0, le=1) = 0.9
    #: How long a duplicate waits for a turn running on another replica (VAPI itself gives up
    #: on a request after the model's timeoutSeconds, at most a minute).
    duplicate_wait_seconds: confloat(ge=0, le=60) = 20.0
    #: A running turn's lease: a duplicate finding its replica silent this long takes it over.
    turn_lease_seconds: confloat(ge=0.5, le=30) = DEFAULT_TURN_LEASE_SECONDS
    #: Trust a plain ``user_id`` variable on web calls. Off: a browser starting a web call
    #: sets variableValues itself, so only a signed ``user_token`` (web chat JWT) is trusted.
    trust_user_id_variable: bool = False
    #: Hosts whose ``monitor.controlUrl`` we POST to (exact names or ``*.`` suffixes; https
    #: only). A server whose PUBLIC_BASE_URL is loopback also reaches loopback (the local fake).
    control_url_hosts: List[ControlHost] = list(DEFAULT_CONTROL_HOSTS)  # type: ignore[valid-type]


class VapiOutput(OutputChannel):
    """Rasa's bot messages for one voice turn, handed to the turn as they come."""

    def __init__(self, turn: VoiceTurn) -> None:
        self.turn = turn

    @classmethod
    def name(cls) -> str:
        return VAPI

    async def send_response(self, recipient_id: str, message: Dict[str, Any]) -> None:
        self.turn.add_bot_message(BotMessage.from_rasa(message))

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        self.turn.add_bot_message(BotMessage(text=text))


def _openai_error(status: int, message: str, kind: str = "invalid_request_error") -> HTTPResponse:
    return response.json(openai_error(message, kind), status=status)


def _turn_metadata(address: Address, call: Call, request: ChatCompletionRequest) -> Dict[str, Any]:
    """The UserMessage metadata of a voice turn (see docs/DESIGN.md, "Contracts")."""
    metadata = {
        "channel": VOICE,
        "address": str(address),
        "call_id": call.call_id,
        "call_type": call.type,
    }
    if address.scheme == "tel":
        metadata["phone_number"] = address.value
    if request.phone_number and request.phone_number.number:
        metadata["to"] = request.phone_number.number
    return metadata


class VapiInput(InputChannel):
    """VAPI's custom-LLM endpoint and server messages."""

    def __init__(self, settings: Settings, options: VapiOptions) -> None:
        self.options = options
        self.auth = VapiAuth(settings.vapi_server_secret, settings.vapi_custom_llm_key)
        identity = IdentityStore()
        self.callers = Callers(
            identity,
            settings.default_phone_region,
            settings.webchat_jwt_secret,
            options.trust_user_id_variable,
        )
        self.greeter = Greeter(identity, options.assistant_request_timeout)
        calls = CallStore(settings.redis_url, options.turn_lease_seconds)
        self.runner = TurnRunner(
            calls,
            BackgroundTasks(VAPI),
            VapiOutput,
            options.barge_in_threshold,
            options.duplicate_wait_seconds,
        )
        self.server_messages = ServerMessages(settings, self.callers, self.greeter, calls)
        self.control_policy = control_policy(options.control_url_hosts, settings.public_base_url)

    @classmethod
    def name(cls) -> str:
        return VAPI

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> VapiInput:
        settings = load_settings()
        settings.require("VAPI_SERVER_SECRET")
        return cls(settings, VapiOptions.parse(SECTION, credentials))

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        """The routes. Turns do not go through ``on_new_message``: see
        ``TurnRunner._locked_turn`` for why and what replaces it."""
        bp = Blueprint("omni_vapi", __name__)
        guard_slow_headers(bp)

        @bp.listener("after_server_start")
        async def take_over_abandoned_turns(app: Sanic, _: Any) -> None:
            # Turns whose replica died and that nobody re-POSTs are finished by the sweeper.
            calls = self.runner.calls
            takeover().register(calls.turns, lambda lease: self.runner.resume(app.ctx.agent, lease))

        @bp.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        async def completions(request: Request) -> Optional[HTTPResponse]:
            return await self.handle_completion(request)

        # stream=True: the body is read by read_body, bounded in size and time.
        bp.add_route(completions, "/chat/completions", methods=["POST"], stream=True)
        bp.add_route(
            completions,
            "/chat/completions/chat/completions",
            methods=["POST"],
            name="completions_doubled",
            stream=True,
        )

        @bp.route("/events", methods=["POST"], stream=True)
        async def events(request: Request) -> HTTPResponse:
            return await self.handle_event(request)

        return bp

    async def handle_completion(self, request: Request) -> Optional[HTTPResponse]:
        """One custom-LLM request: the turn's speech streamed (None: the stream was sent)."""
        received = time.perf_counter()
        if not self.auth.check_custom_llm(request.headers):
            return _openai_error(401, "missing or wrong credentials", "authentication_error")
        try:
            body = await read_body(request, self.options.max_request_bytes)
            parsed = parse_completion_request(body, self.options.max_request_bytes)
        except (BodyRefused, BadRequest) as error:
            return _openai_error(error.status, error.reason)
        # parse_completion_request refuses a request without a call id.
        call, call_id = parsed.call, str(parsed.call.call_id)
        address = self.callers.address(call, parsed.customer)
        writer = ChunkWriter(model=parsed.model or MODEL_NAME)
        agent = request.app.ctx.agent
        said = dialogue(parsed.messages)
        user_texts = [text for role, text in said if role == "user"]
        if not user_texts:
            greeting = await self.greeter.greeting(agent, address)
            return await stream_static(request, writer, [greeting])
        if said[-1][0] != "user" or not user_texts[-1]:
            return await stream_static(request, writer, [])
        if len(user_texts[-1]) > USER_TEXT_MAX_CHARS:
            return _openai_error(400, f"user message longer than {USER_TEXT_MAX_CHARS} characters")
        try:
            conversation_id = await self.callers.conversation(call_id, address)
        except StateUnavailable as error:
            logger.error("voice call %s: %s", call_id, error)
            return await stream_static(request, writer, [APOLOGY])
        ordinal = len(user_texts) - 1
        turn = VoiceTurn(
            conversation_id=conversation_id,
            call_id=call_id,
            turn_id=turn_id(call_id, ordinal, user_texts[-1]),
            call_key=call_key(conversation_id, call_id),
            ordinal=ordinal,
            last_text=user_texts[-1],
            control_url=self._control_url(call),
            metadata=_turn_metadata(address, call, parsed),
        )
        try:
            started = await self.runner.start(agent, turn, parsed.messages)
        except StateUnavailable as error:
            logger.error("voice call %s: %s", call_id, error)
            return await stream_static(request, writer, [APOLOGY])
        first_speech = await stream_speech(request, writer, started.listener, started.turn)
        if started.claimed and turn.rasa_seconds is not None and first_speech is not None:
            total = time.perf_counter() - received
            observe_turn(first_speech - received, turn.rasa_seconds, total)
        return None

    def _control_url(self, call: Call) -> Optional[str]:
        """The call's control URL if the policy allows it (never logged: it is a capability)."""
        url = call.control_url
        if url and not self.control_policy.allows(url):
            logger.warning("call %s: control URL on a host not allowed; not used", call.call_id)
            return None
        return url

    async def handle_event(self, request: Request) -> HTTPResponse:
        """One server message, answered as its type asks (server_messages.py)."""
        try:
            body = await read_body(request, self.options.max_event_bytes)
        except BodyRefused as error:
            return response.json({"error": error.reason}, status=error.status)
        if not self.auth.check_server_message(request.headers, body, time.time()):
            return response.json({"error": "missing or wrong credentials"}, status=401)
        try:
            message = parse_server_message(body, self.options.max_event_bytes)
        except BadRequest as error:
            return response.json({"error": error.reason}, status=error.status)
        try:
            answer = await self.server_messages.handle(request.app.ctx.agent, message)
        except (StateUnavailable, LockError, *REDIS_FAILURES) as error:
            logger.error("VAPI %s not recorded: %s", message.type, error)
            return response.json({"error": "conversation state unavailable"}, status=503)
        return response.json(answer)
