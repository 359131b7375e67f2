"""A conversation's stored events as the chat shows them: the history pages and the messages.

The same :func:`chat_message` turns a stored event (history), a published one (the live feed) and
a reply being sent (this socket's own turn) into one message object, so a message has the same
id and looks the same whichever way it reaches the widget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Set, Tuple

from connectors.event_log.reading import (
    CALL_REPORT_SLOT,
    CHANNEL_LOOKBACK_EVENTS,
    event_log_of,
    next_turn_channel,
)
from omnichannel.channels import VOICE, kind_of_event
from omnichannel.rendering.chat import render_chat
from omnichannel.rendering.messages import BotMessage

if TYPE_CHECKING:
    from rasa.core.agent import Agent

HISTORY_READ_CHUNK = 200

Event = Dict[str, Any]
Message = Dict[str, Any]


def is_shown(event: Event) -> bool:
    """Whether the chat shows this event: user and bot messages, and call reports."""
    kind = event.get("event")
    return kind in ("user", "bot") or (kind == "slot" and event.get("name") == CALL_REPORT_SLOT)


def message_id(event: Event) -> str:
    """A stable id of a user or bot event, the same in history, live frames and own replies."""
    kind = event.get("event")
    if kind == "user" and event.get("message_id"):
        return f"u:{event['message_id']}"
    if kind == "slot" and isinstance(event.get("value"), dict) and event["value"].get("call_id"):
        # Carried-over slots repeat the report at each new session: one call, one message.
        return f"call:{event['value']['call_id']}"
    return f"{'u' if kind == 'user' else 'b'}:{event.get('timestamp')!r}"


def chat_message(event: Event, turn_channel: Optional[str]) -> Optional[Message]:
    """A user or bot event as a chat ``message`` object; None for events a chat does not show.

    Bot events carry the channel of the user turn they answer (``turn_channel``) unless their
    metadata names one, as call summaries do; a ``kind`` in their metadata passes through, and
    the widget shows kinds it does not know as ordinary messages. A reply a person from the
    support team wrote during a hand-off (``metadata.agent``) is role ``agent``, with
    ``agent_name``: the customer sees who answered.
    """
    kind = event.get("event")
    metadata: Dict[str, Any] = (
        event["metadata"] if isinstance(event.get("metadata"), dict) else {}
    )
    base = {"id": message_id(event), "timestamp": event.get("timestamp")}
    if kind == "user":
        text = event.get("text")
        if not text:
            return None
        media = shown_media(metadata.get("media"))
        shown = metadata.get("button_title") or text
        if media and str(text).startswith("/"):
            shown = ""  # the intent media alone stands for, not words the customer wrote
        message = {**base, "role": "user", "channel": kind_of_event(event), "text": str(shown)}
        if media:
            message["media"] = media
        if metadata.get("client_message_id"):
            message["client_message_id"] = metadata["client_message_id"]
        return message
    if kind == "slot":
        return _call_summary(event, base)
    if kind == "bot":
        data: Dict[str, Any] = event["data"] if isinstance(event.get("data"), dict) else {}
        parsed = BotMessage.from_rasa({**data, "text": event.get("text")})
        rendered = render_chat(parsed)
        shown = parsed.text or parsed.buttons or parsed.image or parsed.attachment
        if not (shown or "custom" in rendered):
            return None
        found = metadata.get("agent")
        agent: Dict[str, Any] = found if isinstance(found, dict) else {}
        message = {
            **base,
            "role": "agent" if agent.get("name") else "bot",
            "channel": kind_of_event(event) or turn_channel,
            **rendered,
        }
        if agent.get("name"):
            message["agent_name"] = str(agent["name"])
        if isinstance(metadata.get("kind"), str):
            message["kind"] = metadata["kind"]
        return message
    return None


def shown_media(media: Any) -> List[Dict[str, Any]]:
    """What a chat shows of a customer's media: its kind, type, name and size; a URL only for
    the web chat's own uploads (the widget reads them with its token); media that came by
    WhatsApp or MMS stays at Twilio, named but not shown."""
    shown = []
    for item in media if isinstance(media, list) else []:
        if not isinstance(item, dict):
            continue
        entry = {key: item[key] for key in ("kind", "content_type", "name", "size") if key in item}
        if item.get("source") == "upload" and isinstance(item.get("url"), str):
            entry["url"] = item["url"]
        shown.append(entry)
    return shown


def _call_summary(event: Event, base: Message) -> Optional[Message]:
    """A call's end-of-call report (the ``last_call`` slot) as a voice message, if summarised."""
    report = event.get("value")
    if event.get("name") != CALL_REPORT_SLOT or not isinstance(report, dict):
        return None
    summary = report.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        return None
    text = f"Call summary: {summary.strip()}"
    reported_at = report.get("reported_at")
    return {
        **base,
        "timestamp": reported_at if isinstance(reported_at, (int, float)) else base["timestamp"],
        "role": "bot",
        "channel": VOICE,
        "kind": "call_summary",
        **render_chat(BotMessage(text=text)),
    }


class EventLog:
    """Pages through a conversation's event log for the chat history."""

    def __init__(self, store: Any) -> None:
        self._store = store

    @classmethod
    def of_agent(cls, agent: Agent) -> EventLog:
        return cls(event_log_of(agent, "the web chat history"))

    async def length(self, conversation_id: str) -> int:
        return await self._store.event_count(conversation_id)

    async def page(
        self, conversation_id: str, before: int, limit: int
    ) -> Tuple[List[Message], Optional[int], Optional[str]]:
        """Up to ``limit`` chat messages from the events before index ``before``.

        Returns the messages (oldest first), the cursor for the next older page (None at the
        beginning) and the channel of the latest user turn in the page (for live bot events).
        """
        picked: List[Tuple[int, Event]] = []
        # ``before`` comes from the client: past the end it means the end (walking the gap
        # would cost one empty Redis read per chunk, without bound).
        position = min(before, await self.length(conversation_id))
        while position > 0 and len(picked) < limit:
            start = max(0, position - HISTORY_READ_CHUNK)
            chunk = await self._store.read_events(conversation_id, start, position - 1)
            for offset in range(len(chunk) - 1, -1, -1):
                event = chunk[offset]
                if is_shown(event):
                    picked.append((start + offset, event))
                    if len(picked) >= limit:
                        break
            position = start
        picked.reverse()
        first_index = picked[0][0] if picked else 0
        turn_channel = await self._channel_before(conversation_id, first_index)
        messages = []
        ids: Set[str] = set()
        for _, event in picked:
            turn_channel = next_turn_channel(event, turn_channel)
            message = chat_message(event, turn_channel)
            if message is not None and message["id"] not in ids:
                ids.add(message["id"])
                messages.append(message)
        # More may exist only if the page filled up before the scan reached the log's start.
        cursor = first_index if len(picked) >= limit and first_index > 0 else None
        return messages, cursor, turn_channel

    async def _channel_before(self, conversation_id: str, index: int) -> Optional[str]:
        """The channel of the last user turn before ``index`` (the turn a page's first bot
        messages answered), looking back a bounded distance."""
        position = index
        while position > 0 and index - position < CHANNEL_LOOKBACK_EVENTS:
            start = max(0, position - HISTORY_READ_CHUNK)
            chunk = await self._store.read_events(conversation_id, start, position - 1)
            for event in reversed(chunk):
                if event.get("event") == "user":
                    return kind_of_event(event)
            position = start
        return None
