"""VAPI voice connector: VAPI's custom-LLM endpoint and its server messages.

VAPI does speech-to-text, text-to-speech and telephony; it asks this server what the assistant
says through its *custom LLM* interface (an OpenAI chat-completions client pointed at
``/webhooks/vapi``) and reports what happens on the call through *server messages*
(``/webhooks/vapi/events``). Rasa has no VAPI channel; this one is built on the same contract as
every connector here (identity, ``run_turn``, rendering) plus what a voice line needs:

- **Streaming.** Each bot message is rendered for speech and written as an OpenAI
  ``chat.completion.chunk`` the moment Rasa's output channel receives it (the turn runs as its
  own task feeding a queue), so a filler ("One moment.") is spoken while a slow action runs. The
  turn task is detached from the HTTP request: VAPI cancelling a request never cuts a turn in
  half.
- **Duplicates.** VAPI re-POSTs turns. A turn is keyed by (call id, ordinal of its last user
  message, its text); the first request claims the key in Redis (under the conversation's hash
  tag, so every replica sees it) and records the answer there; a duplicate replays that answer,
  live if the turn is still running, without a second Rasa turn.
- **Superseded turns.** When the caller keeps talking, VAPI cancels the request and POSTs again
  with a longer utterance. The new request takes over the call's "in flight" record; the old
  turn is cancelled if it has not started yet, otherwise its stream stops and, once it is done,
  the new turn appends ``UserUtteranceReverted`` (and the ``action_listen`` the revert takes
  back) for it under the conversation lock, right before its own message is processed (same
  lock hold). The dialogue state thus holds one user turn for the utterance (an active form
  stays active), and only the final answer is streamed. The superseded exchange stays in the
  event log, marked by the revert.
- **Barge-in.** The text we streamed for the last turn is kept per call. VAPI's next history
  carries, as the last assistant message, what was actually spoken; together with
  ``user-interrupted`` events this tells when the caller cut the bot off, and the next
  UserMessage carries ``metadata.barge_in = {sent_text, heard_text, heard_ratio}``. That
  metadata is stored with the user turn, so the tracker records what the caller really heard.
- **Call control.** A bot message whose custom payload is ``{"call_control": "end_call"}`` or
  ``{"call_control": "transfer", "destination": "+1…", "content": "…"}`` is carried out through
  the call's Live Call Control URL. The message's own speech goes with the control request
  (``say`` + ``endCallAfterSpoken``, or the transfer's ``content``), so VAPI hangs up or
  transfers after saying it instead of cutting it off.

Redis keys (all under the conversation's hash tag):
``omni:{cid}:vapi:turn:<hash>`` the answer of one turn (JSON, 1 h);
``omni:{cid}:vapi:call:<hash of call id>`` HASH ``inflight`` (the turn being answered),
``last_sent`` (what the last turn said), ``interrupted_at``, ``superseded:<request id>`` (6 h).
"""

from __future__ import annotations

import asyncio
import difflib
import functools
import hashlib
import hmac
import json
import logging
import math
import re
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Deque, Dict, List, Optional, Sequence, Set, Tuple

import aiohttp
import jwt
from pydantic import BaseModel, Extra, Field, ValidationError
from rasa.core.channels.channel import (
    CollectingOutputChannel,
    InputChannel,
    OutputChannel,
    UserMessage,
)
from rasa.core.lock_store import LockError
from rasa.shared.core.constants import ACTION_LISTEN_NAME
from rasa.shared.core.events import ActionExecuted, SlotSet, UserUtteranceReverted, UserUttered
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from connectors.tracker_store import install_loud_state_failures
from connectors.turns import TurnFailed, run_turn
from omnichannel.identity import (
    Address,
    IdentityStore,
    InvalidAddress,
    anon_address,
    mask,
    phone_address,
    user_address,
)
from omnichannel.redis_client import (
    REDIS_FAILURES,
    LuaScript,
    StateUnavailable,
    conversation_key,
    redis_client,
)
from omnichannel.rendering.messages import BotMessage
from omnichannel.rendering.voice import render_voice, render_voice_message, spoken_text
from omnichannel.settings import ConfigError, Settings, load_settings

logger = logging.getLogger(__name__)

CHANNEL_NAME = "vapi"
#: What the caller hears when a turn fails (Redis, action server): never silence.
APOLOGY = "Sorry, I'm having trouble right now. Please try again in a moment."
GENERIC_GREETING = "Hi, this is the Acme Shop assistant. How can I help?"
MODEL_NAME = "rasa"
#: VAPI's tag that makes its TTS speak buffered text at once.
FLUSH = "<flush />"
#: A turn quiet this long after speaking gets a FLUSH, so its last words are not held back.
FLUSH_AFTER_SECONDS = 0.15
ANSWER_TTL_SECONDS = 3600
CALL_STATE_TTL_SECONDS = 6 * 3600
#: HMAC-signed server messages older (or newer) than this are replays.
SIGNATURE_TOLERANCE_SECONDS = 300
#: How far back other-channel activity counts as "recent" for the personal greeting.
RECENT_ACTIVITY_SECONDS = 7 * 24 * 3600
#: Transcripts stored with the conversation are cut to this many characters (the tail).
TRANSCRIPT_MAX_CHARS = 20000
USER_TEXT_MAX_CHARS = 4000
#: Calls whose conversation id this process remembers (one identity lookup per call).
CALLS_REMEMBERED = 10000
#: Live Call Control requests are made while the stream is open: bounded well below VAPI's
#: 20 s model timeout.
CONTROL_TIMEOUT_SECONDS = 3.0
#: How often a running turn checks whether another replica superseded it.
SUPERSEDE_POLL_SECONDS = 0.2
_WORD = re.compile(r"[a-z0-9']+")


# ---------------------------------------------------------------------------------------------
# Protocol objects, parsed at the edge. Lenient: VAPI's payloads vary between versions.
# ---------------------------------------------------------------------------------------------


class _VapiModel(BaseModel):
    class Config:
        extra = Extra.ignore
        allow_population_by_field_name = True


class Customer(_VapiModel):
    number: Optional[str] = None


class Monitor(_VapiModel):
    control_url: Optional[str] = Field(None, alias="controlUrl")


class AssistantOverrides(_VapiModel):
    variable_values: Dict[str, Any] = Field(default_factory=dict, alias="variableValues")


class Call(_VapiModel):
    id: Optional[str] = None
    legacy_id: Optional[str] = Field(None, alias="callId")
    type: Optional[str] = None
    customer: Optional[Customer] = None
    monitor: Optional[Monitor] = None
    assistant_overrides: Optional[AssistantOverrides] = Field(None, alias="assistantOverrides")

    @property
    def call_id(self) -> Optional[str]:
        value = self.id or self.legacy_id
        return str(value) if value else None

    @property
    def control_url(self) -> Optional[str]:
        url = self.monitor.control_url if self.monitor else None
        return url if url and url.startswith(("https://", "http://")) else None

    @property
    def variables(self) -> Dict[str, Any]:
        return self.assistant_overrides.variable_values if self.assistant_overrides else {}


class PhoneNumber(_VapiModel):
    number: Optional[str] = None


class ChatMessage(_VapiModel):
    role: str
    content: Any = None

    @property
    def text(self) -> str:
        """The message's text, whether content is a string or a list of OpenAI content parts."""
        if isinstance(self.content, str):
            return self.content.strip()
        if isinstance(self.content, list):
            parts = [
                str(part.get("text") or "")
                for part in self.content
                if isinstance(part, dict) and part.get("type", "text") == "text"
            ]
            return " ".join(p.strip() for p in parts if p.strip())
        return ""


class ChatCompletionRequest(_VapiModel):
    """What VAPI POSTs to the custom-LLM URL: OpenAI's request plus the call."""

    messages: List[ChatMessage]
    model: Optional[str] = None
    call: Optional[Call] = None
    customer: Optional[Customer] = None
    phone_number: Optional[PhoneNumber] = Field(None, alias="phoneNumber")


class Artifact(_VapiModel):
    transcript: Optional[str] = None
    recording_url: Optional[str] = Field(None, alias="recordingUrl")
    stereo_recording_url: Optional[str] = Field(None, alias="stereoRecordingUrl")


class Analysis(_VapiModel):
    summary: Optional[str] = None


class ToolFunction(_VapiModel):
    name: Optional[str] = None
    arguments: Any = None
    #: The legacy function-call message's name for the arguments.
    parameters: Any = None


class ToolCall(_VapiModel):
    id: Optional[str] = None
    name: Optional[str] = None
    arguments: Any = None
    function: Optional[ToolFunction] = None

    @property
    def tool_name(self) -> str:
        return str(self.name or (self.function.name if self.function else "") or "")

    @property
    def tool_arguments(self) -> Dict[str, Any]:
        raw = (
            self.arguments
            if self.arguments is not None
            else (self.function.arguments if self.function else None)
        )
        if isinstance(raw, str):
            try:
                raw = json.loads(raw) if raw.strip() else {}
            except (ValueError, RecursionError):
                raise ValueError("arguments are not valid JSON") from None
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise ValueError("arguments must be a JSON object")
        return raw


class ServerMessage(_VapiModel):
    """The ``message`` of a server-message POST; fields by type (see specs/vapi.md)."""

    type: str
    call: Optional[Call] = None
    customer: Optional[Customer] = None
    status: Optional[str] = None
    ended_reason: Optional[str] = Field(None, alias="endedReason")
    artifact: Optional[Artifact] = None
    analysis: Optional[Analysis] = None
    transcript: Any = None
    summary: Optional[str] = None
    recording_url: Optional[str] = Field(None, alias="recordingUrl")
    stereo_recording_url: Optional[str] = Field(None, alias="stereoRecordingUrl")
    started_at: Optional[str] = Field(None, alias="startedAt")
    ended_at: Optional[str] = Field(None, alias="endedAt")
    duration_seconds: Optional[float] = Field(None, alias="durationSeconds")
    tool_call_list: Optional[List[ToolCall]] = Field(None, alias="toolCallList")
    tool_calls: Optional[List[ToolCall]] = Field(None, alias="toolCalls")
    function_call: Optional[ToolFunction] = Field(None, alias="functionCall")


class ServerMessageEnvelope(_VapiModel):
    message: ServerMessage


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}"


# ---------------------------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------------------------


def _bearer(header: Optional[str]) -> Optional[str]:
    """The token of an Authorization header, with or without the "Bearer " prefix."""
    value = (header or "").strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value or None


def _equal(candidate: Optional[str], secret: Optional[str]) -> bool:
    if not candidate or not secret:
        return False
    return hmac.compare_digest(candidate.encode("utf-8"), secret.encode("utf-8"))


def _shared_secret_ok(request: Request, secret: Optional[str]) -> bool:
    candidates = (
        _bearer(request.headers.get("authorization")),
        request.headers.get("x-vapi-secret"),
        request.headers.get("x-vapi-signature"),
    )
    return any(_equal(candidate, secret) for candidate in candidates)


def _hmac_ok(request: Request, secret: Optional[str], now: float) -> bool:
    """VAPI's HMAC credential: hex HMAC-SHA256 over "{timestamp}.{body}", fresh timestamp."""
    signature = (request.headers.get("x-signature") or "").strip()
    timestamp = (request.headers.get("x-timestamp") or "").strip()
    if not signature or not timestamp or not secret:
        return False
    try:
        stamp = float(timestamp)
    except ValueError:
        return False
    if not math.isfinite(stamp):
        # NaN compares false with everything: it would slip through the tolerance check.
        return False
    seconds = stamp / 1000 if stamp > 1e11 else stamp
    if abs(now - seconds) > SIGNATURE_TOLERANCE_SECONDS:
        return False
    if signature.lower().startswith("sha256="):
        signature = signature[7:]
    expected = hmac.new(
        secret.encode("utf-8"), timestamp.encode("utf-8") + b"." + request.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(signature.lower().encode(), expected.encode())


# ---------------------------------------------------------------------------------------------
# Conversation history as VAPI sends it
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpokenTurn:
    """The caller's utterance this request asks us to answer, located in VAPI's history."""

    #: Index (among user messages) of the last user message: with the call id and the text,
    #: the key that tells duplicates and superseding requests apart.
    ordinal: int
    #: Index of the first user message making up the utterance.
    first_ordinal: int
    text: str


def _normalised_words(text: str) -> List[str]:
    return _WORD.findall(text.lower().replace("<flush />", " "))


def extends(longer: str, shorter: str) -> bool:
    """True when ``longer`` is ``shorter`` continued (the caller kept talking)."""
    new, old = _normalised_words(longer), _normalised_words(shorter)
    return len(new) > len(old) and new[: len(old)] == old


def heard_ratio(sent: str, heard: str) -> float:
    """Share of the words we sent that the caller heard (VAPI's transcript of the speech)."""
    sent_words, heard_words = _normalised_words(sent), _normalised_words(heard)
    if not sent_words:
        return 1.0
    matcher = difflib.SequenceMatcher(None, sent_words, heard_words, autojunk=False)
    matched = sum(block.size for block in matcher.get_matching_blocks())
    return round(min(1.0, matched / len(sent_words)), 3)


def _dialogue(messages: Sequence[ChatMessage]) -> List[Tuple[str, str]]:
    return [(m.role, m.text) for m in messages if m.role in ("user", "assistant")]


def spoken_turn(
    messages: Sequence[ChatMessage], last_answered: Optional[Dict[str, Any]] = None
) -> Optional[SpokenTurn]:
    """The utterance to answer: the trailing user messages not yet answered, or None.

    VAPI may split one long utterance over consecutive user messages (a request cancelled
    mid-utterance, then the rest); those after the last assistant message and after the last
    answered turn (``last_answered``: its ``ordinal`` and ``first_ordinal``) are joined. A
    request repeating the last answered turn gets that turn's utterance back, so it is
    recognised as a duplicate.
    """
    dialogue = _dialogue(messages)
    if not dialogue or dialogue[-1][0] != "user":
        return None
    user_count = sum(1 for role, _ in dialogue if role == "user")
    ordinal = user_count - 1
    answered_ordinal = -1
    if last_answered:
        answered_ordinal = int(last_answered["ordinal"])
        if answered_ordinal >= ordinal:
            answered_ordinal = min(ordinal, int(last_answered.get("first_ordinal", ordinal))) - 1
    texts: List[str] = []
    first = ordinal
    current = ordinal
    for role, text in reversed(dialogue):
        if role != "user" or current <= answered_ordinal:
            break
        texts.insert(0, text)
        first = current
        current -= 1
    text = " ".join(t for t in texts if t).strip()
    return SpokenTurn(ordinal=ordinal, first_ordinal=first, text=text) if text else None


def heard_since(messages: Sequence[ChatMessage], after_ordinal: int, before_ordinal: int) -> str:
    """Assistant speech between user message ``after_ordinal`` and ``before_ordinal``."""
    heard: List[str] = []
    ordinal = -1
    for role, text in _dialogue(messages):
        if role == "user":
            ordinal += 1
            if ordinal >= before_ordinal:
                break
        elif after_ordinal <= ordinal and text:
            heard.append(text)
    return " ".join(heard)


# ---------------------------------------------------------------------------------------------
# SSE frames (OpenAI chat.completion.chunk)
# ---------------------------------------------------------------------------------------------


@dataclass
class ChunkWriter:
    """Frames of one streamed completion, exactly as OpenAI's SDK expects them."""

    model: str
    completion_id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))

    def frame(self, delta: Dict[str, Any], finish_reason: Optional[str] = None) -> str:
        chunk = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"

    def role(self) -> str:
        return self.frame({"role": "assistant", "content": ""})

    def content(self, text: str) -> str:
        return self.frame({"content": text})

    def stop(self) -> str:
        return self.frame({}, "stop") + "data: [DONE]\n\n"


def _openai_error(status: int, message: str, kind: str = "invalid_request_error") -> HTTPResponse:
    return response.json({"error": {"message": message, "type": kind}}, status=status)


# ---------------------------------------------------------------------------------------------
# One voice turn: runs detached from the HTTP request, fans its speech out to listeners
# ---------------------------------------------------------------------------------------------

_END = None


@dataclass
class CallControl:
    """A Live Call Control request, made when Rasa's turn is over (before the stream ends)."""

    payload: Dict[str, Any]
    #: Streamed instead when VAPI could not be asked: the caller never hears silence.
    fallback_speech: str


@dataclass
class VoiceTurn:
    request_id: str
    conversation_id: str
    call_id: str
    answer_key: str
    call_key: str
    ordinal: int
    first_ordinal: int
    #: The last user message (with the call and ordinal, the turn's key).
    last_text: str
    #: The utterance Rasa gets: the unanswered user messages up to the last one, joined.
    text: str
    message_id: str
    control_url: Optional[str]
    started_at: float = field(default_factory=time.time)
    spoken: List[str] = field(default_factory=list)
    controls: List[CallControl] = field(default_factory=list)
    finished: bool = False
    superseded: bool = False
    processing: bool = False
    #: Time in what ``agent.handle_message`` does (lock + processor), for the latency stats.
    rasa_seconds: Optional[float] = None
    task: Optional[asyncio.Task] = None
    _listeners: List[asyncio.Queue] = field(default_factory=list)

    def listen(self) -> asyncio.Queue:
        """A queue of everything this turn says, from its start; ``None`` marks the end."""
        queue: asyncio.Queue = asyncio.Queue()
        for speech in self.spoken:
            queue.put_nowait(speech)
        if self.finished:
            queue.put_nowait(_END)
        self._listeners.append(queue)
        return queue

    def say(self, speech: str) -> None:
        if not speech or self.finished:
            return
        self.spoken.append(speech)
        for queue in self._listeners:
            queue.put_nowait(speech)

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            for queue in self._listeners:
                queue.put_nowait(_END)

    def add_bot_message(self, message: BotMessage) -> None:
        if not message.is_for("voice"):
            return
        control = _call_control(message)
        if control is None:
            self.say(render_voice_message(message))
            return
        speech = render_voice_message(message)
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
        fallback = speech if control["call_control"] == "end_call" else APOLOGY
        self.controls.append(CallControl(_control_payload(control, speech), fallback))

    @property
    def sent_text(self) -> str:
        return " ".join(self.spoken)


def _call_control(message: BotMessage) -> Optional[Dict[str, Any]]:
    custom = message.custom or {}
    kind = custom.get("call_control")
    if kind == "end_call":
        return custom
    if kind == "transfer" and isinstance(custom.get("destination"), str):
        return custom
    if kind is not None:
        logger.warning("ignoring malformed call_control payload %r", mask(str(custom))[:200])
    return None


def _control_payload(control: Dict[str, Any], speech: str) -> Dict[str, Any]:
    """The Live Call Control request for a bot message (its speech said by VAPI first)."""
    if control["call_control"] == "end_call":
        if speech:
            return {"type": "say", "content": speech, "endCallAfterSpoken": True}
        return {"type": "end-call"}
    extra = spoken_text(str(control.get("content") or ""))[0]
    content = " ".join(part for part in (speech, extra) if part)
    payload: Dict[str, Any] = {
        "type": "transfer",
        "destination": {"type": "number", "number": control["destination"]},
    }
    if content:
        payload["content"] = content
    return payload


class VapiOutput(OutputChannel):
    """Rasa's bot messages for one voice turn, handed to the turn as they come."""

    def __init__(self, turn: VoiceTurn) -> None:
        self.turn = turn

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    async def send_response(self, recipient_id: str, message: Dict[str, Any]) -> None:
        self.turn.add_bot_message(BotMessage.from_rasa(message))

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        self.turn.add_bot_message(BotMessage(text=text))


# Claims a turn's answer key; on success marks the turn as the call's one in flight.
# KEYS: answer key, call state key. ARGV: running record, answer ttl, inflight json, call ttl.
# Returns {1, call state fields...} when claimed, {0, existing answer record} otherwise.
_CLAIM = LuaScript(
    """
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local state = redis.call('HGETALL', KEYS[2])
redis.call('HSET', KEYS[2], 'inflight', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[4])
local result = {1}
for i = 1, #state do result[#result + 1] = state[i] end
return result
"""
)

# Stores a finished turn's answer and, if the turn is still the call's one in flight, what was
# sent (for barge-in detection on the next turn).
# KEYS: answer key, call state key. ARGV: answer record, answer ttl, request id, last_sent json.
_FINISH = LuaScript(
    """
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
local inflight = redis.call('HGET', KEYS[2], 'inflight')
if inflight and cjson.decode(inflight)['request'] == ARGV[3] then
  redis.call('HDEL', KEYS[2], 'inflight')
  redis.call('HSET', KEYS[2], 'last_sent', ARGV[4])
end
return 1
"""
)


def _retrieve_outcome(task: asyncio.Future) -> None:
    """Marks an abandoned task's exception as seen (asyncio logs unseen ones as errors)."""
    if not task.cancelled():
        task.exception()


def _error_kind(error: BaseException) -> str:
    """An error's class and, for a failed connection, its OS reason: never a URL."""
    reason = getattr(error, "os_error", None)
    return f"{type(error).__name__} ({reason})" if reason else type(error).__name__


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _call_key(conversation_id: str, call_id: str) -> str:
    digest = hashlib.sha256(call_id.encode("utf-8")).hexdigest()[:32]
    return conversation_key(conversation_id, "vapi", "call", digest)


def _answer_key(conversation_id: str, call_id: str, ordinal: int, text: str) -> str:
    digest = hashlib.sha256(f"{call_id}\n{ordinal}\n{text}".encode()).hexdigest()[:32]
    return conversation_key(conversation_id, "vapi", "turn", digest)


# ---------------------------------------------------------------------------------------------
# Tools VAPI may call (function tools configured on the VAPI assistant)
# ---------------------------------------------------------------------------------------------


def _order_status_tool(arguments: Dict[str, Any]) -> str:
    from omnichannel.orders import find_order

    number = arguments.get("order_number") or arguments.get("orderNumber")
    if not number:
        raise ValueError("order_number is required")
    order = find_order(str(number))
    if order is None:
        return render_voice([BotMessage(text=f"There is no order {number}.")])
    when = order.delivered_on or order.estimated_delivery or "soon"
    text = f"Order {order.number} ({order.description}) is {order.status}; delivery {when}."
    return render_voice([BotMessage(text=text)])


#: name -> function(arguments) -> spoken result. Others are refused per tool.
TOOLS: Dict[str, Callable[[Dict[str, Any]], str]] = {"order_status": _order_status_tool}


def _run_tool(call: ToolCall) -> Dict[str, str]:
    """``{"result": …}`` from a known tool, else ``{"error": …}`` saying why not."""
    tool = TOOLS.get(call.tool_name)
    if tool is None:
        return {"error": f"Unknown tool {call.tool_name!r}."}
    try:
        return {"result": tool(call.tool_arguments)}
    except ValueError as error:
        return {"error": f"Bad arguments for {call.tool_name}: {error}."}


# ---------------------------------------------------------------------------------------------
# The channel
# ---------------------------------------------------------------------------------------------


class LatencyLog:
    """Server-side timings of the last turns, for ``GET /webhooks/vapi/stats`` (monitoring and
    the benchmark): when the first words left, time in Rasa (lock + processor, what
    ``agent.handle_message`` does) and the time the connector added around it."""

    KEPT = 1000

    def __init__(self) -> None:
        self._turns: Deque[Tuple[float, float, float]] = deque(maxlen=self.KEPT)

    def add(self, first_speech: float, rasa: float, total: float) -> None:
        self._turns.append((first_speech * 1000, rasa * 1000, (total - rasa) * 1000))

    def summary(self) -> Dict[str, Any]:
        turns = list(self._turns)
        return {
            "turns": len(turns),
            "first_speech_ms": [round(t[0], 3) for t in turns],
            "rasa_ms": [round(t[1], 3) for t in turns],
            "added_ms": [round(t[2], 3) for t in turns],
        }


@dataclass(frozen=True)
class VapiOptions:
    """Tunables from credentials.yml (secrets come from the environment)."""

    max_request_bytes: int = 1_000_000
    max_event_bytes: int = 5_000_000
    #: VAPI gives assistant-request 7.5 s; our Redis reads get at most this.
    assistant_request_timeout: float = 2.0
    #: Below this share of our words heard, the caller cut the bot off.
    barge_in_threshold: float = 0.9
    #: How long a duplicate waits for a turn running on another replica.
    duplicate_wait_seconds: float = 20.0
    #: Trust a plain ``user_id`` variable on web calls. Off: a browser starting a web call
    #: sets variableValues itself, so only a signed ``user_token`` (web chat JWT) is trusted.
    trust_user_id_variable: bool = False

    @classmethod
    def from_credentials(cls, credentials: Dict[str, Any]) -> VapiOptions:
        known = {
            name: credentials[name] for name in cls.__dataclass_fields__ if name in credentials
        }
        unknown = sorted(set(credentials) - set(known))
        if unknown:
            raise ConfigError(f"connectors.vapi.VapiInput: unknown option(s) {', '.join(unknown)}")
        parsed: Dict[str, Any] = {}
        for name, value in known.items():
            default = getattr(cls, name)
            if isinstance(default, bool):
                parsed[name] = str(value).strip().lower() in ("1", "true", "yes", "on")
                continue
            try:
                parsed[name] = type(default)(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"connectors.vapi.VapiInput: {name} must be a number, got {value!r}"
                ) from None
        return cls(**parsed)


class VapiInput(InputChannel):
    """VAPI custom-LLM endpoint and server messages (see the module docstring)."""

    def __init__(self, options: Optional[VapiOptions] = None) -> None:
        self.options = options or VapiOptions()
        self.identity = IdentityStore()
        #: Turns running in this process, by answer key (duplicates attach to them).
        self._turns: Dict[str, VoiceTurn] = {}
        self._background: Set[asyncio.Task] = set()
        self._call_conversations: OrderedDict[Tuple[str, str], str] = OrderedDict()
        self.latency = LatencyLog()

    @classmethod
    def name(cls) -> str:
        return CHANNEL_NAME

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[str, Any]]) -> VapiInput:
        load_settings().require("VAPI_SERVER_SECRET")
        return cls(VapiOptions.from_credentials(dict(credentials or {})))

    # -- routes ---------------------------------------------------------------------------------

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        """The routes. Turns do not go through ``on_new_message`` (Rasa's handler, which is
        ``agent.handle_message``): a superseding turn must revert the superseded one in the same
        lock hold as its own processing, so :meth:`_locked_turn` does what that handler does
        (the lock, then ``processor.handle_message``) with the revert in between; it still runs
        through ``run_turn``, so failures stay loud."""
        bp = Blueprint("omni_vapi", __name__)

        @bp.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        async def completions(request: Request) -> Optional[HTTPResponse]:
            return await self.handle_completion(request)

        bp.add_route(completions, "/chat/completions", methods=["POST"])
        bp.add_route(
            completions,
            "/chat/completions/chat/completions",
            methods=["POST"],
            name="completions_doubled",
        )

        @bp.route("/stats", methods=["GET"])
        async def stats(request: Request) -> HTTPResponse:
            if not _shared_secret_ok(request, load_settings().vapi_server_secret):
                return response.json({"error": "missing or wrong credentials"}, status=401)
            return response.json(self.latency.summary())

        @bp.route("/events", methods=["POST"])
        async def events(request: Request) -> HTTPResponse:
            return await self.handle_event(request)

        return bp

    # -- custom LLM -----------------------------------------------------------------------------

    def _llm_authorised(self, request: Request, settings: Settings) -> bool:
        if _equal(_bearer(request.headers.get("authorization")), settings.vapi_custom_llm_key):
            return True
        return _shared_secret_ok(request, settings.vapi_server_secret)

    async def handle_completion(self, request: Request) -> Optional[HTTPResponse]:
        received = time.perf_counter()
        settings = load_settings()
        if not self._llm_authorised(request, settings):
            return _openai_error(401, "missing or wrong credentials", "authentication_error")
        if len(request.body or b"") > self.options.max_request_bytes:
            return _openai_error(413, f"body larger than {self.options.max_request_bytes} bytes")
        try:
            body = json.loads(request.body or b"")
        except ValueError:
            return _openai_error(400, "body is not valid JSON")
        except RecursionError:
            return _openai_error(400, "body is nested too deeply")
        if not isinstance(body, dict):
            return _openai_error(400, "body must be a JSON object")
        try:
            parsed = ChatCompletionRequest.parse_obj(body)
        except ValidationError as error:
            return _openai_error(400, _first_error(error))
        call = parsed.call or Call()
        if not call.call_id:
            return _openai_error(400, "call.id is required")
        address = self.caller_address(call, parsed.customer, settings)
        writer = ChunkWriter(model=parsed.model or MODEL_NAME)
        agent = request.app.ctx.agent
        dialogue = _dialogue(parsed.messages)
        user_texts = [text for role, text in dialogue if role == "user"]
        if not user_texts:
            greeting = await self.greeting(agent, address)
            return await self._stream_static(request, writer, [greeting])
        if dialogue[-1][0] != "user" or not user_texts[-1]:
            return await self._stream_static(request, writer, [])
        if len(user_texts[-1]) > USER_TEXT_MAX_CHARS:
            return _openai_error(400, f"user message longer than {USER_TEXT_MAX_CHARS} characters")
        try:
            conversation_id = await self._conversation(call.call_id, address)
        except StateUnavailable as error:
            logger.error("voice call %s: %s", call.call_id, error)
            return await self._stream_static(request, writer, [APOLOGY])
        ordinal = len(user_texts) - 1
        turn = VoiceTurn(
            request_id=uuid.uuid4().hex,
            conversation_id=conversation_id,
            call_id=call.call_id,
            answer_key=_answer_key(conversation_id, call.call_id, ordinal, user_texts[-1]),
            call_key=_call_key(conversation_id, call.call_id),
            ordinal=ordinal,
            first_ordinal=ordinal,
            last_text=user_texts[-1],
            text=user_texts[-1],
            message_id=uuid.uuid4().hex,
            control_url=call.control_url,
        )
        metadata = {
            "channel": "voice",
            "address": str(address),
            "call_id": call.call_id,
            "call_type": call.type,
        }
        if address.scheme == "tel":
            metadata["phone_number"] = address.value
        if parsed.phone_number and parsed.phone_number.number:
            metadata["to"] = parsed.phone_number.number
        # Claiming and running the turn must finish even if VAPI drops this request, so they
        # run in a task of their own; this handler only streams what the turn says.
        started: asyncio.Future = asyncio.get_running_loop().create_future()
        runner = asyncio.create_task(self._begin(agent, turn, parsed.messages, metadata, started))
        self._keep(runner)
        try:
            listener, owner, claimed = await asyncio.shield(started)
        except StateUnavailable as error:
            logger.error("voice call %s: %s", call.call_id, error)
            return await self._stream_static(request, writer, [APOLOGY])
        first_speech = await self._stream_turn(request, writer, listener, owner)
        if claimed and owner.rasa_seconds is not None and first_speech is not None:
            total = time.perf_counter() - received
            self.latency.add(first_speech - received, owner.rasa_seconds, total)
        return None

    def caller_address(
        self, call: Call, customer: Optional[Customer], settings: Settings
    ) -> Address:
        """tel: for a phone caller; user: for a signed-in web caller; else the call itself."""
        number = (call.customer.number if call.customer else None) or (
            customer.number if customer else None
        )
        if number:
            try:
                return phone_address(number, settings.default_phone_region)
            except InvalidAddress as error:
                logger.info("call %s: caller number not usable (%s)", call.call_id, error)
        variables = call.variables
        token = variables.get("user_token") or variables.get("userToken")
        if token and settings.webchat_jwt_secret:
            try:
                claims = jwt.decode(
                    str(token),
                    settings.webchat_jwt_secret,
                    algorithms=["HS256"],
                    options={"require": ["sub", "exp"], "verify_aud": False},
                )
                return user_address(str(claims["sub"]))
            except (jwt.PyJWTError, InvalidAddress) as error:
                logger.warning("call %s: user_token rejected (%s)", call.call_id, error)
        user_id = variables.get("user_id") or variables.get("userId")
        if user_id and self.options.trust_user_id_variable:
            try:
                return user_address(str(user_id))
            except InvalidAddress as error:
                logger.info("call %s: user_id not usable (%s)", call.call_id, error)
        digest = hashlib.sha256(str(call.call_id).encode("utf-8")).hexdigest()[:40]
        return anon_address(f"vapi-call-{digest}")

    async def _conversation(self, call_id: str, address: Address) -> str:
        """The call's conversation; resolved once per call and process (a call's caller never
        changes), so later turns of the call skip the identity round trip."""
        cache_key = (call_id, str(address))
        conversation_id = self._call_conversations.get(cache_key)
        if conversation_id is None:
            conversation_id = await self.identity.resolve_conversation(address, channel="voice")
            self._call_conversations[cache_key] = conversation_id
            while len(self._call_conversations) > CALLS_REMEMBERED:
                self._call_conversations.popitem(last=False)
        else:
            self._call_conversations.move_to_end(cache_key)
        return conversation_id

    async def _begin(
        self,
        agent: Any,
        turn: VoiceTurn,
        messages: Sequence[ChatMessage],
        metadata: Dict[str, Any],
        started: asyncio.Future,
    ) -> None:
        """Claim the turn; a duplicate replays, a new turn runs (detached from the request)."""
        try:
            await self._claim_and_run(agent, turn, messages, metadata, started)
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
            started.set_result((local.listen(), local, False))
            return
        inflight = {
            "request": turn.request_id,
            "ordinal": turn.ordinal,
            "text": turn.last_text,
            "message_id": turn.message_id,
            "answer_key": turn.answer_key,
        }
        running = {"state": "running", "request": turn.request_id, "spoken": []}
        try:
            result = await _CLAIM(
                redis_client(),
                [turn.answer_key, turn.call_key],
                [
                    json.dumps(running),
                    ANSWER_TTL_SECONDS,
                    json.dumps(inflight),
                    CALL_STATE_TTL_SECONDS,
                ],
            )
        except REDIS_FAILURES as error:
            started.set_exception(
                StateUnavailable(f"claiming a voice turn: Redis unavailable ({error})")
            )
            return
        if not int(result[0]):
            queue: asyncio.Queue = asyncio.Queue()
            started.set_result((queue, None, False))
            await self._replay(turn, json.loads(_text(result[1])), queue)
            return
        state = {_text(k): _text(v) for k, v in zip(result[1::2], result[2::2], strict=True)}
        last_sent = json.loads(state["last_sent"]) if "last_sent" in state else None
        spoken = spoken_turn(messages, last_sent) or SpokenTurn(
            turn.ordinal, turn.ordinal, turn.last_text
        )
        turn.text = spoken.text[-USER_TEXT_MAX_CHARS:]
        turn.first_ordinal = spoken.first_ordinal
        previous = json.loads(state["inflight"]) if "inflight" in state else None
        supersedes = None
        if previous and previous.get("request") != turn.request_id:
            same_utterance = previous.get("ordinal") == turn.ordinal and extends(
                turn.last_text, str(previous.get("text") or "")
            )
            within = spoken.first_ordinal <= int(previous.get("ordinal", -1)) < turn.ordinal
            if same_utterance or within:
                supersedes = previous
                self._supersede_local(previous)
                await self._mark_superseded(turn.call_key, str(previous.get("request")))
        barge_in = self.barge_in(state, messages, spoken)
        if barge_in:
            metadata = {**metadata, "barge_in": barge_in}
            logger.info(
                "call %s: barge-in, caller heard %.0f%% of the last answer",
                turn.call_id,
                barge_in["heard_ratio"] * 100,
            )
        self._turns[turn.answer_key] = turn
        started.set_result((turn.listen(), turn, True))
        turn.task = asyncio.current_task()
        self._keep(asyncio.create_task(self._watch_for_supersede(turn)))
        await self._run(agent, turn, metadata, supersedes)

    async def _watch_for_supersede(self, turn: VoiceTurn) -> None:
        """Stops a long turn's streams once a request on another replica superseded it.

        Only turns still running after ``SUPERSEDE_POLL_SECONDS`` are polled: a rule-based turn
        is over before VAPI could re-POST, and this keeps Redis off the fast path.
        """
        while not turn.finished:
            await asyncio.sleep(SUPERSEDE_POLL_SECONDS)
            if turn.finished:
                return
            try:
                superseded = await self._superseded_elsewhere(turn)
            except StateUnavailable:
                continue
            if superseded:
                turn.superseded = True
                turn.finish()
                return

    def _supersede_local(self, previous: Dict[str, Any]) -> None:
        old = self._turns.get(str(previous.get("answer_key")))
        if old is None or old.finished:
            return
        old.superseded = True
        logger.info("call %s: turn superseded by a longer utterance", old.call_id)
        if not old.processing and old.task is not None:
            old.task.cancel()
        else:
            old.finish()

    def barge_in(
        self, state: Dict[str, str], messages: Sequence[ChatMessage], spoken: SpokenTurn
    ) -> Optional[Dict[str, Any]]:
        """``{sent_text, heard_text, heard_ratio}`` when the caller cut our last answer off."""
        if "last_sent" not in state:
            return None
        last = json.loads(state["last_sent"])
        sent = str(last.get("text") or "")
        if not sent or int(last["ordinal"]) >= spoken.first_ordinal:
            return None
        heard = heard_since(messages, int(last["ordinal"]), spoken.first_ordinal)
        ratio = heard_ratio(sent, heard)
        interrupted = float(state.get("interrupted_at") or 0) >= float(last.get("at") or 0) > 0
        if ratio < self.options.barge_in_threshold or (interrupted and ratio < 1.0):
            return {"sent_text": sent, "heard_text": heard, "heard_ratio": ratio}
        return None

    async def _run(
        self,
        agent: Any,
        turn: VoiceTurn,
        metadata: Dict[str, Any],
        supersedes: Optional[Dict[str, Any]],
    ) -> None:
        message = UserMessage(
            turn.text,
            VapiOutput(turn),
            turn.conversation_id,
            input_channel=CHANNEL_NAME,
            metadata=metadata,
            message_id=turn.message_id,
        )
        handler = functools.partial(self._locked_turn, agent, turn, supersedes)
        try:
            await run_turn(agent, handler, message)
        except asyncio.CancelledError:
            turn.superseded = True
        except TurnFailed as error:
            logger.error("voice turn on call %s failed: %s", turn.call_id, error)
            turn.say(APOLOGY)
        except Exception:
            logger.exception("voice turn on call %s failed unexpectedly", turn.call_id)
            turn.say(APOLOGY)
        finally:
            try:
                # Before the stream ends, so VAPI has its orders when the model turn is over.
                if not turn.superseded:
                    for control in turn.controls:
                        url = str(turn.control_url)
                        if not await self.control(turn.call_id, url, control.payload):
                            turn.say(control.fallback_speech)
            finally:
                turn.finish()
                finishing = asyncio.ensure_future(self._finish(turn))
                self._keep(finishing)

    async def _locked_turn(
        self,
        agent: Any,
        turn: VoiceTurn,
        supersedes: Optional[Dict[str, Any]],
        message: UserMessage,
    ) -> None:
        """Rasa's ``agent.handle_message`` plus, in the same lock hold, two checks: a turn
        superseded while it waited is dropped, and the turn it supersedes is reverted."""
        began = time.perf_counter()
        async with agent.lock_store.lock(message.sender_id):
            turn.processing = True
            checks_began = time.perf_counter()
            if turn.superseded or await self._superseded_elsewhere(turn):
                turn.superseded = True
                return
            if supersedes:
                await self._revert(agent, message.sender_id, str(supersedes["message_id"]))
            checks = time.perf_counter() - checks_began
            await agent.processor.handle_message(message)
        turn.rasa_seconds = time.perf_counter() - began - checks

    async def _mark_superseded(self, call_key: str, request_id: str) -> None:
        """Tells the superseded turn's replica to stop it. Not fatal when Redis fails: the new
        turn still reverts the old one under the lock, only its stream may run on."""
        try:
            await redis_client().hset(call_key, f"superseded:{request_id}", "1")
        except REDIS_FAILURES as error:
            logger.warning("could not mark a superseded voice turn: %s", type(error).__name__)

    async def _superseded_elsewhere(self, turn: VoiceTurn) -> bool:
        """True once a request (on any replica) superseded this turn."""
        try:
            return bool(
                await redis_client().hexists(turn.call_key, f"superseded:{turn.request_id}")
            )
        except REDIS_FAILURES as error:
            raise StateUnavailable(
                f"call state: Redis unavailable ({type(error).__name__})"
            ) from error

    async def _revert(self, agent: Any, conversation_id: str, message_id: str) -> None:
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

    async def _finish(self, turn: VoiceTurn) -> None:
        """Store the answer (for duplicates) and what was sent (for barge-in)."""
        record = {
            "state": "superseded" if turn.superseded else "done",
            "request": turn.request_id,
            "spoken": [] if turn.superseded else turn.spoken,
        }
        last_sent = {
            "ordinal": turn.ordinal,
            "first_ordinal": turn.first_ordinal,
            "text": turn.sent_text,
            "at": turn.started_at,
        }
        try:
            if turn.superseded:
                await redis_client().set(turn.answer_key, json.dumps(record), ex=ANSWER_TTL_SECONDS)
            else:
                await _FINISH(
                    redis_client(),
                    [turn.answer_key, turn.call_key],
                    [
                        json.dumps(record),
                        ANSWER_TTL_SECONDS,
                        turn.request_id,
                        json.dumps(last_sent),
                    ],
                )
        except REDIS_FAILURES as error:
            logger.error("call %s: could not store the turn's answer: %s", turn.call_id, error)
        finally:
            self._turns.pop(turn.answer_key, None)

    async def control(self, call_id: str, control_url: str, payload: Dict[str, Any]) -> bool:
        """POST one Live Call Control request; failures are logged, never raised.

        The control URL carries the call's token, so neither it nor an error quoting it (aiohttp's
        InvalidURL does) is logged. A URL aiohttp cannot even encode raises ValueError.
        """
        try:
            timeout = aiohttp.ClientTimeout(total=CONTROL_TIMEOUT_SECONDS)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.post(control_url, json=payload) as reply:
                    if reply.status >= 300:
                        logger.error(
                            "call %s: call control %s answered HTTP %s",
                            call_id,
                            payload["type"],
                            reply.status,
                        )
                        return False
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as error:
            logger.error(
                "call %s: call control %s failed: %s", call_id, payload["type"], _error_kind(error)
            )
            return False
        logger.info("call %s: call control %s sent", call_id, payload["type"])
        return True

    async def _replay(self, turn: VoiceTurn, record: Dict[str, Any], queue: asyncio.Queue) -> None:
        """A duplicate: the recorded answer, waiting for it while another replica runs it."""
        deadline = time.monotonic() + self.options.duplicate_wait_seconds
        while record.get("state") == "running" and time.monotonic() < deadline:
            local = self._turns.get(turn.answer_key)
            if local is not None:
                source = local.listen()
                while True:
                    item = await source.get()
                    queue.put_nowait(item)
                    if item is _END:
                        return
            await asyncio.sleep(0.05)
            try:
                raw = await redis_client().get(turn.answer_key)
            except REDIS_FAILURES as error:
                logger.error("call %s: duplicate turn, Redis unavailable: %s", turn.call_id, error)
                break
            record = json.loads(raw) if raw else {"state": "done", "spoken": []}
        if record.get("state") == "running":
            logger.warning("call %s: duplicate of a turn that did not finish", turn.call_id)
        for speech in record.get("spoken") or []:
            queue.put_nowait(speech)
        queue.put_nowait(_END)

    async def _stream_turn(
        self,
        request: Request,
        writer: ChunkWriter,
        listener: asyncio.Queue,
        turn: Optional[VoiceTurn],
    ) -> Optional[float]:
        """Streams what ``listener`` yields; returns when the first words left (perf_counter)."""
        stream = await request.respond(
            content_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        await stream.send(writer.role())
        first = True
        first_speech: Optional[float] = None
        flush_due = False
        getter: Optional[asyncio.Future] = None
        try:
            while True:
                if getter is None:
                    getter = asyncio.ensure_future(listener.get())
                timeout = FLUSH_AFTER_SECONDS if flush_due else None
                done, _ = await asyncio.wait({getter}, timeout=timeout)
                if not done:
                    # The turn went quiet after some speech (a filler before a slow action):
                    # VAPI holds buffered text until more comes, so make it speak now.
                    await stream.send(writer.content(FLUSH))
                    flush_due = False
                    continue
                speech, getter = getter.result(), None
                if speech is _END:
                    break
                if turn is not None and turn.superseded:
                    break
                await stream.send(writer.content(speech if first else " " + speech))
                if first:
                    first_speech = time.perf_counter()
                first = False
                flush_due = turn is not None
        finally:
            if getter is not None:
                getter.cancel()
        await stream.send(writer.stop())
        await stream.eof()
        return first_speech

    async def _stream_static(
        self, request: Request, writer: ChunkWriter, speech: Sequence[str]
    ) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        for item in speech:
            if item:
                queue.put_nowait(item)
        queue.put_nowait(_END)
        await self._stream_turn(request, writer, queue, None)

    def _keep(self, task: asyncio.Task) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- greeting -------------------------------------------------------------------------------

    async def greeting(self, agent: Any, address: Optional[Address]) -> str:
        """The first thing said on a call: personal when the caller was here recently.

        Bounded by ``assistant_request_timeout`` (VAPI waits 7.5 s for assistant-request);
        when Redis is slow or down the caller still gets the generic greeting.
        """
        generic = self._generic_greeting(agent)
        if address is None:
            return generic
        install_loud_state_failures(agent)
        reading = asyncio.ensure_future(self._personal_greeting(agent, address))
        done, _ = await asyncio.wait({reading}, timeout=self.options.assistant_request_timeout)
        if not done:
            # Not wait_for: it would wait for the cancelled read to unwind, and a hung Redis
            # connection can take its time doing that. The read is left to end on its own.
            reading.cancel()
            reading.add_done_callback(_retrieve_outcome)
            logger.warning("greeting for %s: state read timed out", address.masked())
            return generic
        try:
            personal = reading.result()
        except (StateUnavailable, *REDIS_FAILURES) as error:
            logger.warning("greeting for %s: state unavailable (%s)", address.masked(), error)
            return generic
        return personal or generic

    @staticmethod
    def _generic_greeting(agent: Any) -> str:
        domain = getattr(agent, "domain", None)
        variations = (domain.responses.get("utter_greet") if domain else None) or []
        for wanted in (CHANNEL_NAME, None):
            for variation in variations:
                if variation.get("channel") == wanted and variation.get("text"):
                    return render_voice([BotMessage(text=variation["text"])])
        return GENERIC_GREETING

    async def _personal_greeting(self, agent: Any, address: Address) -> Optional[str]:
        conversation_id = await self.identity.lookup(address)
        if conversation_id is None:
            return None
        tracker = await agent.tracker_store.retrieve(conversation_id)
        if tracker is None:
            return None
        now = time.time()
        last_other: Optional[str] = None
        for event in reversed(tracker.events):
            if not isinstance(event, UserUttered):
                continue
            if now - event.timestamp > RECENT_ACTIVITY_SECONDS:
                break
            channel = (event.metadata or {}).get("channel")
            if channel in ("sms", "chat"):
                last_other = channel
                break
        order = tracker.get_slot("order_number")
        if order and last_other == "sms":
            text = f"Welcome back! Are you calling about order {order} you texted us about?"
        elif order and last_other == "chat":
            text = f"Welcome back! Are you calling about order {order} from your chat with us?"
        elif last_other == "sms":
            text = "Welcome back! I see you texted us earlier. How can I help?"
        elif last_other == "chat":
            text = "Welcome back! I see you chatted with us earlier. How can I help?"
        else:
            return None
        return render_voice([BotMessage(text=text)])

    # -- server messages ------------------------------------------------------------------------

    async def handle_event(self, request: Request) -> HTTPResponse:
        settings = load_settings()
        secret = settings.vapi_server_secret
        if not (_shared_secret_ok(request, secret) or _hmac_ok(request, secret, time.time())):
            return response.json({"error": "missing or wrong credentials"}, status=401)
        if len(request.body or b"") > self.options.max_event_bytes:
            return response.json(
                {"error": f"body larger than {self.options.max_event_bytes} bytes"}, status=413
            )
        try:
            body = json.loads(request.body or b"")
            envelope = ServerMessageEnvelope.parse_obj(body)
        except ValueError as error:
            reason = _first_error(error) if isinstance(error, ValidationError) else "invalid JSON"
            return response.json({"error": reason}, status=400)
        except RecursionError:
            return response.json({"error": "body is nested too deeply"}, status=400)
        message = envelope.message
        agent = request.app.ctx.agent
        try:
            if message.type == "assistant-request":
                return response.json(await self.assistant_request(agent, message, settings))
            if message.type == "tool-calls":
                return response.json(self.tool_calls(message))
            if message.type == "function-call":
                return response.json(self.function_call(message))
            if message.type == "transfer-destination-request":
                return response.json(self.transfer_destination(settings))
            if message.type == "end-of-call-report":
                await self.end_of_call_report(agent, message, settings)
            elif message.type == "user-interrupted":
                await self.user_interrupted(message, settings)
            elif message.type == "status-update":
                logger.info(
                    "call %s: status %s%s",
                    message.call.call_id if message.call else "?",
                    message.status,
                    f" ({message.ended_reason})" if message.ended_reason else "",
                )
        except (StateUnavailable, LockError, *REDIS_FAILURES) as error:
            logger.error("VAPI %s not recorded: %s", message.type, error)
            return response.json({"error": "conversation state unavailable"}, status=503)
        return response.json({})

    async def assistant_request(
        self, agent: Any, message: ServerMessage, settings: Settings
    ) -> Dict[str, Any]:
        call = message.call or Call()
        has_caller = call.call_id or (message.customer and message.customer.number)
        address = self.caller_address(call, message.customer, settings) if has_caller else None
        greeting = await self.greeting(agent, address)
        model: Dict[str, Any] = {
            "provider": "custom-llm",
            "url": f"{settings.public_base_url}/webhooks/{CHANNEL_NAME}",
            "model": MODEL_NAME,
            "metadataSendMode": "variable",
            "timeoutSeconds": 20,
        }
        if not settings.vapi_custom_llm_key and settings.vapi_server_secret:
            # Without a custom-LLM credential, VAPI authenticates with the server secret.
            model["headers"] = {"X-Vapi-Secret": settings.vapi_server_secret}
        return {
            "assistant": {
                "name": "Acme Shop assistant",
                "firstMessage": greeting,
                "firstMessageMode": "assistant-speaks-first",
                "model": model,
                "serverMessages": [
                    "status-update",
                    "end-of-call-report",
                    "user-interrupted",
                    "tool-calls",
                    "transfer-destination-request",
                ],
            }
        }

    def tool_calls(self, message: ServerMessage) -> Dict[str, Any]:
        """Each tool call answered with a ``result``, or refused with an ``error``, on its own."""
        results = []
        for call in message.tool_call_list or message.tool_calls or []:
            entry: Dict[str, Any] = {"toolCallId": call.id or "", "name": call.tool_name}
            entry.update(_run_tool(call))
            results.append(entry)
        return {"results": results}

    @staticmethod
    def function_call(message: ServerMessage) -> Dict[str, Any]:
        """The legacy ``function-call`` message: one call, answered ``{"result": …}``."""
        function = message.function_call or ToolFunction()
        return _run_tool(ToolCall(name=function.name, arguments=function.parameters))

    @staticmethod
    def transfer_destination(settings: Settings) -> Dict[str, Any]:
        """Where a transfer goes when VAPI asks: the same support line the hand-off uses."""
        if not settings.handoff_phone_number:
            return {"error": "No transfer destination is configured."}
        return {"destination": {"type": "number", "number": settings.handoff_phone_number}}

    async def _conversation_of(
        self, message: ServerMessage, settings: Settings, create: bool
    ) -> Optional[Tuple[str, Call]]:
        call = message.call or Call()
        if not call.call_id and not (message.customer and message.customer.number):
            return None
        address = self.caller_address(call, message.customer, settings)
        if create:
            return await self.identity.resolve_conversation(address, channel="voice"), call
        conversation_id = await self.identity.lookup(address)
        return (conversation_id, call) if conversation_id else None

    async def end_of_call_report(
        self, agent: Any, message: ServerMessage, settings: Settings
    ) -> None:
        """Stores the call's report in the ``last_call`` slot, under the conversation lock."""
        found = await self._conversation_of(message, settings, create=True)
        if found is None:
            logger.warning("end-of-call-report without call or customer: not stored")
            return
        conversation_id, call = found
        artifact = message.artifact or Artifact()
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
                tracker = await agent.processor.fetch_tracker_with_initial_session(
                    conversation_id, CollectingOutputChannel(), {"channel": "voice"}
                )
                tracker.update(SlotSet("last_call", report))
                await agent.processor.save_tracker(tracker)
        except REDIS_FAILURES as error:
            raise StateUnavailable(f"storing the call report: {type(error).__name__}") from error
        logger.info("call %s: end-of-call report stored (%s)", call.call_id, message.ended_reason)

    async def user_interrupted(self, message: ServerMessage, settings: Settings) -> None:
        found = await self._conversation_of(message, settings, create=False)
        if found is None or not found[1].call_id:
            return
        conversation_id, call = found
        key = _call_key(conversation_id, str(call.call_id))
        async with redis_client().pipeline(transaction=True) as pipe:
            pipe.hset(key, "interrupted_at", repr(time.time()))
            pipe.expire(key, CALL_STATE_TTL_SECONDS)
            await pipe.execute()
