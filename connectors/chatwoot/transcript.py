"""What agents see of a conversation in Chatwoot, and in what words. Pure.

The event log is read the way the viewer and the inbox read it (:func:`connectors.viewer.
timeline.entry_of`: each message as its channel delivered it, phone numbers masked), and each
entry that matters to an agent becomes one Chatwoot message:

- the customer's messages → ``incoming`` messages, labelled with the channel they came on
  (``[SMS] where is my parcel``): replies go to the channel the customer last used, so agents
  need to see it change;
- the assistant's messages (and its hand-off notices) → private notes, ``Assistant (SMS): …``:
  they were not written by an agent, so they must not count as agents' replies in Chatwoot's
  reports (first response time), and a note can never be mistaken for something to send;
- replies agents sent from the embedded inbox → private notes ``Dana in the inbox (SMS): …``;
  replies sent from Chatwoot are there already (skipped);
- a call's end-of-call report (summary and transcript, for a caller who asked for a person) →
  a private note.

Everything else (actions, slots, pauses) stays out; the summary note at the top
(:func:`summary_note`) says what agents need to know to answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from connectors.event_log.reading import next_turn_channel
from connectors.viewer.timeline import Masker, entry_of
from omnichannel.channels import LABELS, VOICE
from omnichannel.handoff.reach import Reach
from omnichannel.handoff.state import ASSISTANT_GAVE_UP, Handoff
from omnichannel.identity import ContactProfile
from omnichannel.masking import mask

#: Our id of an agent's reply sent from Chatwoot (the hand-off engine's ``message_id``).
CHATWOOT_REPLY_PREFIX = "chatwoot-"
#: Longest message we post (Chatwoot keeps up to 150,000 characters; agents need far less).
MAX_POST_CHARS = 20_000

INCOMING = "incoming"
OUTGOING = "outgoing"


@dataclass(frozen=True)
class Post:
    """One message to post in the Chatwoot conversation."""

    content: str
    message_type: str = OUTGOING
    private: bool = True


def reply_message_id(chatwoot_message_id: int) -> str:
    return f"{CHATWOOT_REPLY_PREFIX}{chatwoot_message_id}"


def _label(channel: Optional[str]) -> str:
    return LABELS.get(channel or "", "")


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_POST_CHARS else text[: MAX_POST_CHARS - 1] + "…"


def _rendered_text(rendered: Mapping[str, Any]) -> str:
    """A bot message's text as its channel delivered it (the viewer's ``rendered``)."""
    text = rendered.get("body") or rendered.get("speech") or rendered.get("text") or ""
    buttons = [
        str(button.get("title"))
        for button in rendered.get("buttons") or []
        if isinstance(button, Mapping) and button.get("title")
    ]
    if buttons:
        text = f"{text}\nOptions: " + " · ".join(buttons)
    return str(text).strip()


def post_of(entry: Mapping[str, Any], event: Mapping[str, Any], masker: Masker) -> Optional[Post]:
    """The Chatwoot message for one timeline ``entry`` (of ``event``), or None."""
    kind = entry.get("type")
    if kind == "user":
        metadata = event.get("metadata")
        title = metadata.get("button_title") if isinstance(metadata, Mapping) else None
        text = masker(str(title)) if isinstance(title, str) and title else entry.get("text")
        if not text:
            return None
        label = _label(entry.get("channel"))
        return Post(_bounded(f"[{label}] {text}" if label else str(text)), INCOMING, False)
    if kind == "bot":
        message_id = entry.get("message_id") or ""
        if message_id.startswith(CHATWOOT_REPLY_PREFIX):
            return None  # an agent's reply from Chatwoot: it is there already
        text = _rendered_text(entry.get("rendered") or {})
        if not text:
            return None
        agent = entry.get("agent")
        who = f"{agent} in the inbox" if agent else "Assistant"
        label = _label(entry.get("delivered_on") or entry.get("channel"))
        return Post(_bounded(f"{who} ({label}): {text}" if label else f"{who}: {text}"))
    if kind == "call_summary":
        lines = ["Call report"]
        if entry.get("ended_reason"):
            lines[0] += f" (ended: {entry['ended_reason']})"
        if entry.get("summary"):
            lines.append(f"Summary: {entry['summary']}")
        if entry.get("transcript"):
            lines.append(f"Transcript:\n{entry['transcript']}")
        return Post(_bounded("\n".join(lines))) if len(lines) > 1 else None
    return None


def posts_of(
    events: Iterable[Tuple[int, Mapping[str, Any]]],
    turn_channel: Optional[str],
    masker: Masker,
) -> List[Tuple[int, Optional[Post], Optional[str]]]:
    """``(index, post or None, turn channel after it)`` for each ``(index, event)``.
    ``turn_channel`` is the channel of the last customer message before them: the channel bot
    messages without one of their own answered on."""
    found: List[Tuple[int, Optional[Post], Optional[str]]] = []
    for index, event in events:
        turn_channel = next_turn_channel(dict(event), turn_channel)
        entry = entry_of(index, dict(event), turn_channel, masker)
        found.append((index, post_of(entry, event, masker) if entry else None, turn_channel))
    return found


def is_message(event: Mapping[str, Any]) -> bool:
    """An event the transcript before a hand-off counts: a customer's or the assistant's message."""
    return event.get("event") in ("user", "bot")


def contact_of(
    profile: ContactProfile, conversation_id: str, inbox_id: int, share_phone: bool
) -> Dict[str, Any]:
    """The Chatwoot contact of a customer: named after how we know them, their phone number
    given only when ``share_phone`` (else masked in the name, as agents' pages show it);
    ``identifier`` is our conversation id (no personal data, and unique per Chatwoot account,
    so the contact is found again rather than created twice)."""
    if profile.phone:
        name = "Customer " + (profile.phone if share_phone else mask(profile.phone))
    elif profile.user_id:
        name = "Web chat user " + profile.user_id[:2] + "***"
    else:
        name = "Customer " + conversation_id[:10]
    contact: Dict[str, Any] = {
        "inbox_id": inbox_id,
        "name": name,
        "identifier": conversation_id,
        "additional_attributes": {
            "description": "Customer of the assistant (rasa-omnichannel conversation "
            f"{conversation_id})",
        },
    }
    if share_phone and profile.phone:
        contact["phone_number"] = profile.phone
    return contact


def summary_note(
    handoff: Handoff,
    profile: ContactProfile,
    found: Reach,
    share_phone: bool,
    transcript_messages: int,
) -> str:
    """The first note of the Chatwoot conversation: what happened, who the customer is, where
    replies go and how to give the conversation back."""
    asked = _label(handoff.channel) or handoff.channel or "an unknown channel"
    why = (
        "the assistant could not help and asked for a person"
        if handoff.reason == ASSISTANT_GAVE_UP
        else "the customer asked for a person"
    )
    lines = [f"Hand-off from {asked}: {why}."]
    who = []
    if profile.phone:
        who.append("phone " + (profile.phone if share_phone else mask(profile.phone)))
    if profile.user_id:
        who.append("signed in on the website as " + profile.user_id[:2] + "***")
    seen = [_label(kind) for kind in sorted(profile.channels) if _label(kind)]
    if seen:
        who.append("has used " + ", ".join(seen))
    if who:
        lines.append("Customer: " + "; ".join(who) + ".")
    if found.default is not None:
        where = _label(found.default)
        lines.append(
            f"Your replies here reach the customer by {where} (the channel they last used)"
            + (" — they called, so they are answered by text" if handoff.channel == VOICE else "")
            + ". Private notes stay internal."
        )
    else:
        reasons = "; ".join(found.unavailable.values()) or "no channel"
        lines.append(f"Replies cannot reach the customer right now: {reasons}.")
    if profile.sms_opted_out:
        lines.append("The customer opted out of texts (STOP).")
    lines.append(
        "Assign the conversation to take it; resolve it to hand the customer back to the assistant."
    )
    if transcript_messages:
        lines.append(
            f"Below: up to {transcript_messages} messages before the hand-off, then everything "
            "since. Customer messages show their channel; the assistant's are notes."
        )
    return "\n".join(lines)


def closing_note(handoff: Handoff) -> str:
    """The note that ends the mirror of a closed hand-off."""
    by = handoff.closed_by.name if handoff.closed_by else "someone"
    if handoff.state == "handed_back":
        return f"Handed back to the assistant by {by}. Replies here no longer reach the customer."
    if handoff.state == "resolved":
        return f"Resolved by {by}: the assistant answers the customer's next message."
    detail = handoff.history[-1].detail if handoff.history else ""
    return f"The hand-off ended ({detail or handoff.state}); the assistant is back."
