"""What agents' pages send: the JSON bodies of the inbox's API and the frames of its socket,
parsed and bounded at the edge. No Sanic, no Rasa.

Every body is a JSON object with known keys only; conversation ids are the identity layer's
(``c_`` + random) or any id a Redis key may carry (stock channels pick their own); message and
note ids come from the page (so a resent reply is the same reply) and are short tokens.
"""

from __future__ import annotations

from typing import Any, Optional, Type, TypeVar, Union

from pydantic import BaseModel, Field, ValidationError

from omnichannel import bounded_json
from omnichannel.handoff.reach import REPLY_CHANNELS

#: A body is a few short fields and at most one reply or note.
MAX_BODY_BYTES = 64 * 1024
MAX_FRAME_BYTES = 16 * 1024
MAX_TEXT_CHARS = 10_000
# Each ends in \Z: pydantic matches with re.match, and "$" would let a trailing newline through.
CONVERSATION_ID = r"^[A-Za-z0-9_.:@+-]{1,128}\Z"
CLIENT_ID = r"^[A-Za-z0-9_-]{8,64}\Z"
CHANNEL = "^(" + "|".join(REPLY_CHANNELS) + r")\Z"


class BadRequest(ValueError):
    """The body or frame cannot be taken; the message is safe to answer with (400)."""


class Body(BaseModel):
    class Config:
        extra = "forbid"
        anystr_strip_whitespace = False


class Conversation(Body):
    conversation_id: str = Field(..., regex=CONVERSATION_ID)


class TimelinePage(Conversation):
    #: Events before this log index (None: the latest page).
    before: Optional[int] = Field(default=None, ge=0)


class Claim(Conversation):
    #: Take the conversation from the agent holding it (recorded).
    take_over: bool = False


class Reply(Conversation):
    message_id: str = Field(..., regex=CLIENT_ID)
    channel: str = Field(..., regex=CHANNEL)
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS)


class Note(Conversation):
    note_id: str = Field(..., regex=CLIENT_ID)
    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS)


class Preview(Body):
    channel: str = Field(..., regex=CHANNEL)
    text: str = Field(..., max_length=MAX_TEXT_CHARS)
    #: The conversation the reply is for: the preview then says how it would go now (WhatsApp's
    #: window open or shut, an opt-out).
    conversation_id: Optional[str] = Field(default=None, regex=CONVERSATION_ID)


class Queue(Body):
    limit: int = Field(default=200, ge=1, le=1000)


class AuthFrame(Body):
    type: str = Field(..., regex=r"^auth\Z")
    token: str = Field(..., min_length=1, max_length=8192)


class WatchFrame(Body):
    type: str = Field(..., regex=r"^watch\Z")
    #: None: stop watching.
    conversation_id: Optional[str] = Field(default=None, regex=CONVERSATION_ID)


class PingFrame(Body):
    type: str = Field(..., regex=r"^ping\Z")


_B = TypeVar("_B", bound=Body)


def _problem(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in issue['loc'])}: "
        + ("unknown field" if issue["type"] == "value_error.extra" else issue["msg"])
        for issue in error.errors()
    )[:300]


def _json(raw: Union[bytes, str]) -> Any:
    try:
        return bounded_json.loads(raw or b"null")
    except bounded_json.TooDeep as error:
        raise BadRequest(str(error)) from None
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the body must be JSON") from None


def parse_body(model: Type[_B], raw: bytes) -> _B:
    """The body as ``model``; BadRequest otherwise."""
    body = _json(raw)
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        return model(**body)
    except ValidationError as error:
        raise BadRequest(_problem(error)) from None


def parse_frame(raw: Union[bytes, str]) -> Union[AuthFrame, WatchFrame, PingFrame]:
    """A socket frame; BadRequest otherwise."""
    if len(raw) > MAX_FRAME_BYTES:
        raise BadRequest(f"frame larger than {MAX_FRAME_BYTES} bytes")
    frame = _json(raw)
    if not isinstance(frame, dict):
        raise BadRequest("a frame is a JSON object")
    kinds = {"auth": AuthFrame, "watch": WatchFrame, "ping": PingFrame}
    model = kinds.get(frame.get("type"))  # type: ignore[arg-type]
    if model is None:
        raise BadRequest("unknown frame type")
    try:
        return model(**frame)
    except ValidationError as error:
        raise BadRequest(_problem(error)) from None
