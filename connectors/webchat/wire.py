"""The web chat wire format: client frames parsed at the edge, server frames built in one place.

No Sanic and no Rasa here: this module is the protocol docs/INTEGRATORS.md documents ("Web
chat protocol"), as data. :func:`parse_frame` is total: whatever a client sends (valid JSON of the
wrong shape, nesting deeper than the JSON parser's recursion limit, numbers too large to read)
gives a frame or :class:`BadFrame`, never another exception, so a hostile or buggy frame costs
the client an error frame, not the socket and a traceback in the log.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Mapping, Optional, Type, Union, cast

from pydantic import BaseModel, Field, StrictStr, ValidationError, root_validator, validator

from omnichannel import bounded_json

#: Frames above this size get an error frame (Sanic itself drops the socket above 1 MiB).
MAX_FRAME_BYTES = 16 * 1024
MAX_TEXT_CHARS = 4000
MAX_TOKEN_CHARS = 8192
#: A client id that can be named in an error frame without echoing a frame's worth of text.
MAX_CLIENT_ID_CHARS = 64
CLIENT_MESSAGE_ID = r"^[A-Za-z0-9_-]{8,64}\Z"
#: Largest page of history a client may ask for.
MAX_HISTORY_LIMIT = 200
#: Where the widget uploads files and reads them back (``POST``, ``GET …/<upload id>``).
FILES_PATH = "/webhooks/webchat/files"
#: Files (uploaded first: omnichannel/uploads.py) one message may carry.
MAX_ATTACHMENTS = 4
UPLOAD_ID = r"^u_[A-Za-z0-9_-]{22}\Z"

# Close codes (4000-4999 are the application's own): the reason text says what went wrong.
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
#: The session (user or visitor) already holds as many sockets as it may.
CLOSE_TOO_MANY = 4429
CLOSE_SERVER_ERROR = 1011

# Error codes of ``error`` frames (docs/INTEGRATORS.md lists what each means to a client).
BAD_FRAME = "bad_frame"
FRAME_TOO_LARGE = "frame_too_large"
RATE_LIMITED = "rate_limited"
NOT_PROCESSED = "not_processed"
BUSY = "busy"
STATE_UNAVAILABLE = "state_unavailable"
LIVE_FEED_LOST = "live_feed_lost"

Frame = Dict[str, Any]


# -- client -> server --------------------------------------------------------------------------


class _ClientFrame(BaseModel):
    class Config:
        extra = "forbid"
        anystr_strip_whitespace = False


class AuthFrame(_ClientFrame):
    type: StrictStr = Field(..., regex=r"^auth\Z")
    token: StrictStr = Field(..., min_length=1, max_length=MAX_TOKEN_CHARS)
    #: The browser's IANA time zone (``Intl``), so messages the shop sends first respect the
    #: customer's own night; optional.
    timezone: Optional[StrictStr] = Field(default=None, regex=r"^[A-Za-z0-9_+\-/]{1,64}\Z")


class TextFrame(_ClientFrame):
    """A message: text, files uploaded before it (their upload ids), or both."""

    type: StrictStr = Field(..., regex=r"^message\Z")
    id: StrictStr = Field(..., regex=CLIENT_MESSAGE_ID)
    text: StrictStr = Field(default="", max_length=MAX_TEXT_CHARS)
    attachments: List[StrictStr] = Field(default_factory=list, max_items=MAX_ATTACHMENTS)

    @validator("attachments", each_item=True)
    def _upload_id(cls, value: str) -> str:  # noqa: N805
        if not re.match(UPLOAD_ID, value):
            raise ValueError("not an upload id")
        return value

    @root_validator(skip_on_failure=True)
    def _says_something(cls, values: Dict[str, Any]) -> Dict[str, Any]:  # noqa: N805
        if not values.get("text") and not values.get("attachments"):
            raise ValueError("a message needs text or attachments")
        return values


class ButtonFrame(_ClientFrame):
    type: StrictStr = Field(..., regex=r"^button\Z")
    id: StrictStr = Field(..., regex=CLIENT_MESSAGE_ID)
    payload: StrictStr = Field(..., min_length=1, max_length=MAX_TEXT_CHARS)
    title: StrictStr = Field(default="", max_length=MAX_TEXT_CHARS)


class HistoryFrame(_ClientFrame):
    type: StrictStr = Field(..., regex=r"^history\Z")
    before: int = Field(..., ge=0)
    limit: Optional[int] = Field(default=None, ge=1, le=MAX_HISTORY_LIMIT)

    @validator("before", "limit", pre=True)
    def _json_integer(cls, value: Any) -> Any:
        """JSON integers only: pydantic would read 1.5 as 1, true as 1 and "7" as 7."""
        if value is not None and type(value) is not int:
            raise TypeError("value is not an integer")
        return value


class PingFrame(_ClientFrame):
    type: StrictStr = Field(..., regex=r"^ping\Z")
    id: Optional[StrictStr] = Field(default=None, max_length=MAX_CLIENT_ID_CHARS)


ClientFrame = Union[AuthFrame, TextFrame, ButtonFrame, HistoryFrame, PingFrame]
#: A frame that starts a turn.
TurnFrame = Union[TextFrame, ButtonFrame]
_FRAME_TYPES: Dict[str, Type[_ClientFrame]] = {
    "auth": AuthFrame,
    "message": TextFrame,
    "button": ButtonFrame,
    "history": HistoryFrame,
    "ping": PingFrame,
}


class BadFrame(ValueError):
    """A frame the server cannot use; ``code`` and the message go back in an error frame."""

    def __init__(self, code: str, message: str, frame_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.frame_id = frame_id


def _load_object(data: Any) -> Dict[str, Any]:
    """The JSON object a frame holds (BadFrame for anything else, however malformed)."""
    if isinstance(data, (bytes, bytearray)):
        raise BadFrame(BAD_FRAME, "frames must be JSON text, not binary")
    if not isinstance(data, str):
        raise BadFrame(BAD_FRAME, "frames must be JSON text")
    if len(data) > MAX_FRAME_BYTES or len(data.encode("utf-8", "surrogatepass")) > MAX_FRAME_BYTES:
        raise BadFrame(FRAME_TOO_LARGE, f"frames are limited to {MAX_FRAME_BYTES} bytes")
    try:
        raw = bounded_json.loads(data)
    except bounded_json.TooDeep as error:
        raise BadFrame(BAD_FRAME, f"frame is {error}") from None
    except ValueError:
        # Also a number of more digits than Python converts (sys.get_int_max_str_digits).
        raise BadFrame(BAD_FRAME, "frame is not valid JSON") from None
    if not isinstance(raw, dict):
        raise BadFrame(BAD_FRAME, "frame must be a JSON object")
    return raw


def _id_of(raw: Mapping[str, Any]) -> Optional[str]:
    """The frame's ``id`` when an error may name it: a string of at most MAX_CLIENT_ID_CHARS."""
    frame_id = raw.get("id")
    return frame_id if isinstance(frame_id, str) and len(frame_id) <= MAX_CLIENT_ID_CHARS else None


def parse_frame(data: Any) -> ClientFrame:
    """One client frame, checked for size, JSON, type and fields; BadFrame otherwise."""
    raw = _load_object(data)
    frame_id = _id_of(raw)
    kind = raw.get("type")
    model = _FRAME_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise BadFrame(
            BAD_FRAME, f"unknown frame type; expected one of {', '.join(_FRAME_TYPES)}", frame_id
        )
    try:
        return cast(ClientFrame, model.parse_obj(raw))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors()
        )
        raise BadFrame(BAD_FRAME, f"invalid {kind} frame: {problems}"[:300], frame_id) from None


def frame_id(data: Any) -> Optional[str]:
    """The ``id`` of a frame that will not be parsed (so its error can name it), if any."""
    try:
        return _id_of(_load_object(data))
    except BadFrame:
        return None


# -- server -> client --------------------------------------------------------------------------


def encode(frame: Frame) -> str:
    return json.dumps(frame, ensure_ascii=False)


def ready_frame(
    conversation_id: str, user: str, limits: Mapping[str, Any], channels: Mapping[str, str]
) -> Frame:
    """``channels`` maps each channel kind to its label: the widget's badges come from here."""
    return {
        "type": "ready",
        "conversation_id": conversation_id,
        "user": user,
        "limits": dict(limits),
        "channels": dict(channels),
    }


def history_frame(messages: List[Frame], before: Optional[int], *, initial: bool) -> Frame:
    return {"type": "history", "initial": initial, "messages": messages, "before": before}


def message_frame(message: Frame) -> Frame:
    return {"type": "message", "message": message}


def ack_frame(client_id: str, duplicate: bool) -> Frame:
    return {"type": "ack", "id": client_id, "duplicate": duplicate}


def typing_frame(on: bool) -> Frame:
    return {"type": "typing", "on": on}


def pong_frame(ping_id: Optional[str]) -> Frame:
    return {"type": "pong", **({"id": ping_id} if ping_id else {})}


def error_frame(code: str, message: str, client_id: Optional[str] = None, **extra: Any) -> Frame:
    """``extra``: ``retry`` (resending the same id is safe) or ``retry_after`` (seconds)."""
    frame = {"type": "error", "code": code, "message": message, **extra}
    if client_id:
        frame["id"] = client_id
    return frame
