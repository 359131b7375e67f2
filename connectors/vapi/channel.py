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
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Optional, cast

from pydantic import Field, constr
from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from rasa.core.lock_store import LockError
from sanic import Sanic, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.http_limits import ChannelBlueprint, bounded_body
from connectors.vapi.auth import VapiAuth
from connectors.vapi.call_control import DEFAULT_CONTROL_HOSTS, control_policy
from connectors.vapi.callbacks import CallbackCalls, CallbackCourier, CallbackReporter
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
from omnichannel.addresses import Address
from omnichannel.channels import VAPI, VOICE
from omnichannel.customer_tokens import MAX_TOKEN_LIFETIME, HostTokenPolicy
from omnichannel.identity import IdentityStore
from omnichannel.options import ConnectorOptions
from omnichannel.outbound.items import outbound_queue
from omnichannel.outbound.policy import CALLBACK
from omnichannel.redis_client import REDIS_FAILURES, StateUnavailable
from omnichannel.rendering.messages import BotMessage
from omnichannel.settings import Settings, load_settings
from omnichannel.tasks import BackgroundTasks

logger = logging.getLogger(__name__)

SECTION = "connectors.vapi.channel.VapiInput"


#: A host name, or ``*.`` and a domain.
if TYPE_CHECKING:
    ControlHost = str
else:
    ControlHost = constr(regex=r"^(\*\.)?[A-Za-z0-9.-]{1,253}\Z")


class VapiOptions(ConnectorOptions):
    """Tunables from credentials.yml (secrets come from the environment)."""

    #: Largest custom-LLM request / server message (VAPI resends the whole call history).
    max_request_bytes: int = Field(default=1_000_000, ge=1024, le=100_000_000)
    max_event_bytes: int = Field(default=5_000_000, ge=1024, le=100_000_000)
    #: VAPI gives assistant-request 7.5 s; our Redis reads get at most this.
    assistant_request_timeout: float = Field(default=2.0, gt=0, le=7.0)
    #: Below this share of our words heard, the caller cut the bot off.
    barge_in_threshold: float = Field(default=0.9, ge=0, le=1)
    #: How long a duplicate waits for a turn running on another replica (VAPI itself gives up
    #: on a request after the model's timeoutSeconds, at most a minute).
    duplicate_wait_seconds: float = Field(default=20.0, ge=0, le=60)
    #: A running turn's lease: a duplicate finding its replica silent this long takes it over.
    turn_lease_seconds: float = Field(default=DEFAULT_TURN_LEASE_SECONDS, ge=0.5, le=30)
    #: Trust a plain ``user_id`` variable on web calls. Off: a browser starting a web call
    #: sets variableValues itself, so only a signed ``user_token`` (web chat JWT) is trusted.
    trust_user_id_variable: bool = False
    #: A web call's ``user_token`` is the web chat's token and is checked the same way: its
    #: ``exp`` at most this far ahead, and its ``aud`` this value when set (set both as the web
    #: chat's options are set).
    max_token_lifetime: int = Field(default=MAX_TOKEN_LIFETIME, ge=60, le=365 * 24 * 3600)
    jwt_audience: Optional[str] = Field(default=None, min_length=1, max_length=200)
    #: Hosts whose ``monitor.controlUrl`` we POST to (exact names or ``*.`` suffixes; https
    #: only). A server whose PUBLIC_BASE_URL is loopback also reaches loopback (the local fake).
    control_url_hosts: List[ControlHost] = list(DEFAULT_CONTROL_HOSTS)


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
        user_tokens = (
            HostTokenPolicy(
                settings.webchat_jwt_secret, options.jwt_audience, options.max_token_lifetime
            )
            if settings.webchat_jwt_secret
            else None
        )
        self.callers = Callers(
            identity, settings.default_phone_region, user_tokens, options.trust_user_id_variable
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
        self._app: Optional[Sanic] = None
        self.redis_url = settings.redis_url
        reporter = CallbackReporter(lambda: self._require_app().ctx.agent, settings.redis_url)
        self.callback_calls = CallbackCalls(
            report=reporter, default_region=settings.default_phone_region
        )
        self.server_messages = ServerMessages(
            settings, self.callers, self.greeter, calls, self.callback_calls
        )
        self.control_policy = control_policy(options.control_url_hosts, settings.public_base_url)
        #: Places callbacks when VAPI's API is configured (VAPI_API_KEY, VAPI_PHONE_NUMBER_ID).
        self.courier = (
            CallbackCourier(settings, report=reporter) if settings.places_calls else None
        )

    def _require_app(self) -> Sanic:
        if self._app is None:
            raise RuntimeError("the VAPI channel's server has not started")
        return self._app

    @classmethod
    def name(cls) -> str:
        return VAPI

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> VapiInput:
        settings = load_settings()
        # Both: the custom-LLM key is what VAPI's dashboard holds for our model, so no answer
        # ever has to hand VAPI a secret (see ServerMessages.assistant_request).
        settings.require("VAPI_SERVER_SECRET", "VAPI_CUSTOM_LLM_KEY")
        return cls(settings, VapiOptions.parse(SECTION, credentials))

    def blueprint(
        self, on_new_message: Callable[[UserMessage], Awaitable[Any]]
    ) -> ChannelBlueprint:
        """The routes. Turns do not go through ``on_new_message``: see
        ``TurnRunner._locked_turn`` for why and what replaces it. Bodies are read before the
        handlers run (connectors/http_limits.py), and only from a client whose headers carry
        VAPI's credentials."""
        bp = ChannelBlueprint("omni_vapi", __name__)

        @bp.listener("after_server_start")
        async def take_over_abandoned_turns(app: Sanic, _: Any) -> None:
            # Turns whose replica died and that nobody re-POSTs are finished by the sweeper.
            calls = self.runner.calls
            calls.turns.resume_with(lambda lease: self.runner.resume(app.ctx.agent, lease))
            self._app = app
            if self.courier is not None:
                self.courier.name_of = lambda: self.greeter.assistant_name(app.ctx.agent)
                queue = outbound_queue(self.redis_url)
                queue.register(CALLBACK, self.courier)
                queue.start()

        @bp.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @bounded_body(
            self.options.max_request_bytes, admit=self._custom_llm_caller, refuse=_openai_error
        )
        async def completions(request: Request) -> Optional[HTTPResponse]:
            return await self.handle_completion(request)

        bp.add_route(completions, "/chat/completions", methods=["POST"])
        bp.add_route(
            completions,
            "/chat/completions/chat/completions",
            methods=["POST"],
            name="completions_doubled",
        )

        @bp.route("/events", methods=["POST"])
        @bounded_body(self.options.max_event_bytes, admit=self._server_message_sender)
        async def events(request: Request) -> HTTPResponse:
            return await self.handle_event(request)

        return bp

    def _custom_llm_caller(self, request: Request) -> Optional[HTTPResponse]:
        """A custom-LLM request without VAPI's credentials, refused before its body is read."""
        if self.auth.check_custom_llm(request.headers):
            return None
        return _openai_error(401, "missing or wrong credentials", "authentication_error")

    def _server_message_sender(self, request: Request) -> Optional[HTTPResponse]:
        """A server message whose headers cannot authenticate it, refused before its body."""
        if self.auth.may_authenticate_server_message(request.headers, time.time()):
            return None
        return response.json({"error": "missing or wrong credentials"}, status=401)

    async def handle_completion(self, request: Request) -> Optional[HTTPResponse]:
        """One custom-LLM request (its caller authenticated, its body read and bounded by
        connectors/http_limits.py): the turn's speech streamed (None: the stream was sent)."""
        received = time.perf_counter()
        if not self.auth.check_custom_llm(request.headers):
            return _openai_error(401, "missing or wrong credentials", "authentication_error")
        try:
            parsed = parse_completion_request(request.body or b"", self.options.max_request_bytes)
        except BadRequest as error:
            return _openai_error(error.status, error.reason)
        # parse_completion_request refuses a request without a call id.
        call = cast(Call, parsed.call)
        call_id = str(call.call_id)
        address = self.callers.address(call, parsed.customer)
        writer = ChunkWriter(model=parsed.model or MODEL_NAME)
        agent = request.app.ctx.agent
        said = dialogue(parsed.messages)
        user_texts = [text for role, text in said if role == "user"]
        if not user_texts:
            greeting = await self.greeter.greeting(agent, address)
            await stream_static(request, writer, [greeting])
            return None
        if said[-1][0] != "user" or not user_texts[-1]:
            await stream_static(request, writer, [])
            return None
        if len(user_texts[-1]) > USER_TEXT_MAX_CHARS:
            return _openai_error(400, f"user message longer than {USER_TEXT_MAX_CHARS} characters")
        try:
            # A callback's call continues the conversation it was asked for in.
            conversation_id = await self.callback_calls.conversation_of(
                call
            ) or await self.callers.conversation(call_id, address)
        except (StateUnavailable, *REDIS_FAILURES) as error:
            logger.error("voice call %s: %s", call_id, error)
            await stream_static(request, writer, [APOLOGY])
            return None
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
            await stream_static(request, writer, [APOLOGY])
            return None
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
        body = request.body or b""
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
