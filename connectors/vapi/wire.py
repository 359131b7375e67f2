"""VAPI's wire format: the payloads it POSTs, parsed at the edge, and the SSE frames we answer.

Lenient where VAPI's payloads vary between versions (unknown fields ignored, legacy names such
as ``call.callId`` understood; see docs/specs/vapi.md), strict where a bad body must get a 4xx
with a short reason instead of a 500. No Sanic, no Rasa: everything here works on bytes and dicts.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, Extra, Field, ValidationError, constr

from omnichannel import bounded_json

#: The ``model`` we answer as when the request names none (and the one assistant-request sets).
MODEL_NAME = "rasa"
#: VAPI's tag that makes its TTS speak buffered text at once.
FLUSH = "<flush />"
#: Longest last user message a turn accepts (a transcript, not a document).
USER_TEXT_MAX_CHARS = 4000


class BadRequest(Exception):
    """A body we refuse: ``status`` (400 or 413) and a reason short enough to send back."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


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
    #: What we set on calls we place (``assistantOverrides.metadata``); VAPI hands it back in
    #: the call object and, as ``metadata``, to the custom LLM.
    metadata: Dict[str, Any] = Field(default_factory=dict)


#: What a VAPI id (a UUID) may look like: anything else (a newline that forges a log line, a
#: megabyte of text) is refused with a 400.
VapiId = constr(regex=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}\Z")


class Call(_VapiModel):
    id: Optional[VapiId] = None  # type: ignore[valid-type]
    legacy_id: Optional[VapiId] = Field(None, alias="callId")  # type: ignore[valid-type]
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

    @property
    def metadata(self) -> Dict[str, Any]:
        return self.assistant_overrides.metadata if self.assistant_overrides else {}

    @property
    def outbound(self) -> bool:
        """A call we (or someone with the org's key) placed: ``customer`` is the callee."""
        return self.type == "outboundPhoneCall"


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
    #: The assistant's metadata (``metadataSendMode: variable``).
    metadata: Dict[str, Any] = Field(default_factory=dict)


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
    id: Optional[VapiId] = None  # type: ignore[valid-type]
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
                raw = bounded_json.loads(raw) if raw.strip() else {}
            except bounded_json.TooDeep as error:
                raise ValueError(f"arguments are {error}") from None
            except ValueError:
                raise ValueError("arguments are not valid JSON") from None
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise ValueError("arguments must be a JSON object")
        return raw


class ServerMessage(_VapiModel):
    """The ``message`` of a server-message POST; fields by type (see docs/specs/vapi.md)."""

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


def _check_size(body: bytes, max_bytes: int) -> None:
    if len(body) > max_bytes:
        raise BadRequest(413, f"body larger than {max_bytes} bytes")


def parse_completion_request(body: Optional[bytes], max_bytes: int) -> ChatCompletionRequest:
    """A custom-LLM request that names its call; BadRequest says what is wrong with it."""
    _check_size(body or b"", max_bytes)
    try:
        data = bounded_json.loads(body or b"")
    except bounded_json.TooDeep as error:
        raise BadRequest(400, f"body is {error}") from None
    except ValueError:
        raise BadRequest(400, "body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "body must be a JSON object")
    try:
        parsed = ChatCompletionRequest.parse_obj(data)
    except ValidationError as error:
        raise BadRequest(400, _first_error(error)) from None
    if not (parsed.call and parsed.call.call_id):
        raise BadRequest(400, "call.id is required")
    return parsed


def parse_server_message(body: Optional[bytes], max_bytes: int) -> ServerMessage:
    """The ``message`` of a server-message POST; BadRequest says what is wrong with it."""
    _check_size(body or b"", max_bytes)
    try:
        return ServerMessageEnvelope.parse_obj(bounded_json.loads(body or b"")).message
    except ValidationError as error:
        raise BadRequest(400, _first_error(error)) from None
    except bounded_json.TooDeep as error:
        raise BadRequest(400, f"body is {error}") from None
    except ValueError:
        raise BadRequest(400, "invalid JSON") from None
    except RecursionError:
        raise BadRequest(400, "body is nested too deeply") from None


#: The server messages the assistants we hand VAPI send us (``status-update`` and
#: ``end-of-call-report`` also tell how a call we placed went).
SUBSCRIBED = [
    "status-update",
    "end-of-call-report",
    "user-interrupted",
    "tool-calls",
    "transfer-destination-request",
]


def custom_llm_assistant(public_base_url: str, name: str, first_message: str) -> Dict[str, Any]:
    """A transient assistant whose model is this server (VAPI's custom LLM), as answered to
    ``assistant-request`` and sent with calls we place when no saved assistant is configured.

    It carries no credential: VAPI authenticates custom-LLM requests with the custom-LLM
    credential stored in its dashboard (``VAPI_CUSTOM_LLM_KEY``)."""
    return {
        "name": name,
        "firstMessage": first_message,
        "firstMessageMode": "assistant-speaks-first",
        "model": {
            "provider": "custom-llm",
            "url": f"{public_base_url}/webhooks/vapi",
            "model": MODEL_NAME,
            "metadataSendMode": "variable",
            "timeoutSeconds": 20,
        },
        "serverMessages": list(SUBSCRIBED),
    }


def openai_error(message: str, kind: str = "invalid_request_error") -> Dict[str, Any]:
    """An error body as OpenAI's API sends it (what VAPI's OpenAI client understands)."""
    return {"error": {"message": message, "type": kind}}


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
