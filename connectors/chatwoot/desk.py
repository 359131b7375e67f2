"""The Chatwoot mirror: each hand-off becomes a conversation in a Chatwoot API inbox, kept up to
date from the event log, so agents answer there (:class:`ChatwootDesk`, an
:class:`~connectors.handoff.desk.AgentDesk` that owns the agent side).

The hand-off engine calls :meth:`ChatwootDesk.sync` at least once after every change, on any
replica, one sync of a conversation at a time. A sync brings Chatwoot up to the state it reads:

1. a new hand-off: the customer's Chatwoot contact (found by its ``identifier``, our
   conversation id, or created with a session in the inbox), then a conversation for this
   hand-off (``additional_attributes.omni_handoff_id``), its link back for the webhook, and the
   transcript's starting point (:data:`~.options.ChatwootOptions.transcript_messages` before the
   request);
2. the summary note (:func:`.transcript.summary_note`);
3. the event log from the cursor on, as :mod:`.transcript` words it; the inbox's notes; notes
   for agents about their own actions (a reply that could not be sent);
4. a closed hand-off: what is left before it closed, a closing note, and the conversation
   resolved in Chatwoot unless it was resolved there.

Nothing is posted twice and nothing is lost: each post is a step with its own ``source_id``
(``omni:<hand-off>:…``), marked ``pending`` in Redis before it is sent and done (with the cursor)
after; a step found pending (the replica died, or Chatwoot failed to answer) is first looked for
among the conversation's messages. A failure (Chatwoot down, 429, 5xx) raises: the engine retries
the sync through its durable work item after :meth:`ChatwootDesk.retry_delay` (exponential
backoff), logs each failure and counts it (``omnichannel_desk_syncs{outcome="failed"}``,
``omnichannel_chatwoot_requests``), and gives up loudly after many; the next change of the
conversation resumes from the cursor.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from connectors.chatwoot.api import ChatwootApi, ChatwootRefused
from connectors.chatwoot.options import ChatwootOptions
from connectors.chatwoot.state import ChatwootState, Thread
from connectors.chatwoot.transcript import (
    CHATWOOT_REPLY_PREFIX,
    Post,
    closing_note,
    contact_of,
    is_message,
    posts_of,
    summary_note,
)
from connectors.chatwoot.wire import OPEN, OUR_SOURCE_PREFIX, RESOLVED
from connectors.handoff.desk import AgentDesk, DeskContext
from connectors.viewer.timeline import Masker
from omnichannel import metrics
from omnichannel.channels import kind_of_event
from omnichannel.handoff.state import Handoff
from omnichannel.identity import ContactProfile, IdentityStore
from omnichannel.redis_client import redis_client

logger = logging.getLogger(__name__)

CHATWOOT = "chatwoot"
#: Our agents' ids for Chatwoot users: ``chatwoot:<user id>``.
AGENT_ID_PREFIX = "chatwoot:"
#: Events read per step of the mirror.
BATCH_EVENTS = 100
#: How far back (events) the transcript before a hand-off is looked for.
TRANSCRIPT_LOOKBACK_EVENTS = 1000
#: The Chatwoot conversation's attribute naming the hand-off it mirrors.
HANDOFF_ATTRIBUTE = "omni_handoff_id"


def _timestamp(event: Mapping[str, Any]) -> float:
    value = event.get("timestamp")
    return float(value) if isinstance(value, (int, float)) else 0.0


class ChatwootDesk(AgentDesk):
    """See the module docstring."""

    name = CHATWOOT
    owns_agent_side = True

    def __init__(self, options: ChatwootOptions, redis_url: Optional[str]) -> None:
        self.options = options
        self.redis_url = redis_url
        self.state = ChatwootState(redis_url, options.account_id)

    def api(self) -> Any:
        """A session of Chatwoot's API (``async with desk.api() as api``)."""
        return ChatwootApi.session(
            str(self.options.url),
            self.options.account_id,
            self.options.secret("api_access_token") or "",
            self.options.request_timeout_seconds,
        )

    def retry_delay(self, attempt: int) -> float:
        return min(
            self.options.retry_max_seconds,
            self.options.retry_base_seconds * 2 ** max(0, attempt - 1),
        )

    async def sync(self, conversation_id: str, engine: DeskContext) -> None:
        try:
            await self._sync(conversation_id, engine)
        except Exception:
            # The engine logs it with the attempt and when it is retried.
            metrics.DESK_SYNCS.labels(desk=self.name, outcome="failed").inc()
            raise
        metrics.DESK_SYNCS.labels(desk=self.name, outcome="ok").inc()

    async def _sync(self, conversation_id: str, engine: DeskContext) -> None:
        handoff = await engine.store.get(conversation_id)
        if handoff is None:
            return  # expired or erased: nothing left to mirror
        thread = await self.state.thread(conversation_id)
        if thread.handoff_id != handoff.id and not handoff.is_open:
            return  # ended before it was mirrored (a call put through, withdrawn at once)
        async with self.api() as api:
            mirror = _Mirror(self, api, engine, conversation_id, thread)
            if thread.handoff_id != handoff.id:
                if thread.conversation and not thread.done("closed"):
                    await mirror.retire()
                await mirror.open(handoff)
            await mirror.run(handoff)
        if mirror.more:
            # Out of time for this sync: the rest in another one (durable, like this one).
            await engine.changed(conversation_id)


class _Mirror:
    """One sync of one conversation (see the module docstring); ``thread`` is kept current."""

    def __init__(
        self,
        desk: ChatwootDesk,
        api: ChatwootApi,
        engine: DeskContext,
        conversation_id: str,
        thread: Thread,
    ) -> None:
        self.desk = desk
        self.options = desk.options
        self.state = desk.state
        self.api = api
        self.engine = engine
        self.cid = conversation_id
        self.thread = thread
        self.deadline = time.monotonic() + self.options.sync_budget_seconds
        self.more = False
        self._profile: Optional[ContactProfile] = None

    async def profile(self) -> ContactProfile:
        if self._profile is None:
            identity = IdentityStore(redis_client(self.desk.redis_url))
            self._profile = await identity.profile(self.cid)
        return self._profile

    def out_of_time(self) -> bool:
        if time.monotonic() >= self.deadline:
            self.more = True
        return self.more

    # -- one post, once -----------------------------------------------------------------------

    async def post(
        self, source_id: str, post: Post, conversation: Optional[int] = None, **done: Any
    ) -> None:
        """Posts ``post`` once under ``source_id``, then records ``done`` (the step's fields)."""
        target = conversation or self.thread.conversation
        same = target == self.thread.conversation
        if self.thread.pending == source_id:
            found = await self.api.find_message(
                target, source_id, self.thread.last_message if same else 0
            )
            if found is not None:
                logger.info("Chatwoot %s: %s was posted before (reconciled)", target, source_id)
                mark = {"last_message": found["id"]} if same else {}
                self.thread = await self.state.update(self.cid, pending="", **mark, **done)
                return
        self.thread = await self.state.update(self.cid, pending=source_id)
        message = await self.api.create_message(
            target,
            {
                "content": post.content,
                "message_type": post.message_type,
                "private": post.private,
                "source_id": source_id,
            },
        )
        mark = {"last_message": message["id"]} if same else {}
        self.thread = await self.state.update(self.cid, pending="", **mark, **done)

    def source(self, handoff_id: str, step: str) -> str:
        return f"{OUR_SOURCE_PREFIX}{handoff_id}:{step}"

    # -- a new hand-off ------------------------------------------------------------------------

    async def open(self, handoff: Handoff) -> None:
        """The Chatwoot contact and conversation of ``handoff``, and where its transcript starts."""
        contact_id, source_id = await self.contact()
        conversation = None
        if self.thread.get("pending_conversation") == handoff.id:
            conversation = await self.find_conversation(contact_id, handoff.id)
        if conversation is None:
            self.thread = await self.state.update(self.cid, pending_conversation=handoff.id)
            try:
                created = await self.api.create_conversation(
                    {
                        "source_id": source_id,
                        "inbox_id": self.options.inbox_id,
                        "contact_id": contact_id,
                        "status": OPEN,
                        "additional_attributes": {
                            HANDOFF_ATTRIBUTE: handoff.id,
                            "omni_conversation_id": self.cid,
                            "omni_channel": handoff.channel,
                        },
                    }
                )
            except ChatwootRefused as error:
                if error.status in (404, 422):
                    # The contact or its session is gone in Chatwoot (deleted, merged): the
                    # next attempt makes them again.
                    await self.state.update(self.cid, contact_id="", source_id="")
                raise
            conversation = created["id"]
        start, turn_channel = await self.transcript_start(handoff)
        self.thread = await self.state.start_mirror(self.cid, handoff.id, conversation, start)
        self.thread = await self.state.update(self.cid, turn_channel=turn_channel or "")
        logger.info("hand-off of %s mirrored to Chatwoot conversation %s", self.cid, conversation)

    async def contact(self) -> Tuple[int, str]:
        """The customer's contact in Chatwoot and their session (``source_id``) in our inbox."""
        if self.thread.contact_id and self.thread.source_id:
            return self.thread.contact_id, self.thread.source_id
        wanted = contact_of(
            await self.profile(),
            self.cid,
            self.options.inbox_id,
            self.options.share_phone_number,
        )
        try:
            contact = await self.api.create_contact(wanted)
        except ChatwootRefused as error:
            if error.status != 422:
                raise
            # Most likely made by an earlier attempt (or an earlier hand-off whose state
            # expired): the identifier is unique per account.
            found = [
                c
                for c in await self.api.search_contacts(self.cid)
                if c.get("identifier") == self.cid
            ]
            if not found:
                raise
            contact = found[0]
        contact_id = int(contact["id"])
        source_id = contact.get("source_id") or self._session_in_inbox(contact)
        if not source_id:
            source_id = await self.api.create_contact_inbox(contact_id, self.options.inbox_id)
        self.thread = await self.state.update(self.cid, contact_id=contact_id, source_id=source_id)
        return contact_id, source_id

    def _session_in_inbox(self, contact: Mapping[str, Any]) -> Optional[str]:
        for session in contact.get("contact_inboxes") or []:
            inbox = session.get("inbox") if isinstance(session, Mapping) else None
            if isinstance(inbox, Mapping) and inbox.get("id") == self.options.inbox_id:
                source_id = session.get("source_id")
                if isinstance(source_id, str) and source_id:
                    return source_id
        return None

    async def find_conversation(self, contact_id: int, handoff_id: str) -> Optional[int]:
        """The conversation an earlier attempt created for ``handoff_id``, if it did."""
        for conversation in await self.api.contact_conversations(contact_id):
            attributes = conversation.get("additional_attributes")
            if (
                isinstance(attributes, Mapping)
                and attributes.get(HANDOFF_ATTRIBUTE) == handoff_id
                and isinstance(conversation.get("id"), int)
            ):
                logger.info("Chatwoot conversation %s was created before", conversation["id"])
                return int(conversation["id"])
        return None

    async def transcript_start(self, handoff: Handoff) -> Tuple[int, Optional[str]]:
        """The log index the mirror starts at (``transcript_messages`` messages before the
        request, or the first event after it), and the channel of the customer's last message
        before it."""
        log = self.engine.event_log()
        count = await log.event_count(self.cid)
        base = max(0, count - TRANSCRIPT_LOOKBACK_EVENTS)
        events = await log.read_events(self.cid, base, count - 1) if count else []
        before = [
            i
            for i, event in enumerate(events)
            if is_message(event) and _timestamp(event) < handoff.requested_at
        ]
        kept = (
            before[-self.options.transcript_messages :] if self.options.transcript_messages else []
        )
        after = next(
            (i for i, event in enumerate(events) if _timestamp(event) >= handoff.requested_at),
            len(events),
        )
        start = kept[0] if kept else after
        channel = next(
            (
                kind_of_event(event)
                for event in reversed(events[:start])
                if event.get("event") == "user" and kind_of_event(event)
            ),
            None,
        )
        return base + start, channel

    # -- keeping it current --------------------------------------------------------------------

    async def run(self, handoff: Handoff) -> None:
        if not self.thread.done("summary"):
            profile = await self.profile()
            note = summary_note(
                handoff,
                profile,
                await self.engine.reach(self.cid),
                self.options.share_phone_number,
                self.options.transcript_messages,
            )
            await self.post(self.source(handoff.id, "summary"), Post(note), summary=1)
        await self.events(handoff)
        if self.more:
            return
        await self.inbox_notes(handoff)
        await self.notices(handoff)
        if not handoff.is_open and not self.more and not self.thread.done("closed"):
            await self.close(handoff)

    async def events(self, handoff: Handoff) -> None:
        """The event log from the cursor on (of a closed hand-off: up to its close)."""
        log = self.engine.event_log()
        profile = await self.profile()
        masker = Masker(profile.phone if self.options.share_phone_number else None)
        until = handoff.closed_at if not handoff.is_open else None
        while True:
            cursor = self.thread.cursor
            batch = await log.read_events(self.cid, cursor, cursor + BATCH_EVENTS - 1)
            if not batch:
                return
            turn_channel = self.thread.get("turn_channel") or None
            items = posts_of(enumerate(batch, start=cursor), turn_channel, masker)
            for index, post, after in items:
                event = batch[index - cursor]
                if post is None or (until is not None and _timestamp(event) > until):
                    continue
                await self.post(
                    self.source(handoff.id, f"e{index}"),
                    post,
                    cursor=index + 1,
                    turn_channel=after or "",
                )
                if self.out_of_time():
                    return
            self.thread = await self.state.update(
                self.cid, cursor=cursor + len(batch), turn_channel=items[-1][2] or ""
            )
            if len(batch) < BATCH_EVENTS or self.out_of_time():
                return

    async def inbox_notes(self, handoff: Handoff) -> None:
        """Notes agents wrote in the embedded inbox (Chatwoot's own notes are there already)."""
        notes: List[Dict[str, Any]] = await self.engine.store.notes(self.cid)
        for position in range(self.thread.notes_cursor, len(notes)):
            note = notes[position]
            if str(note.get("id") or "").startswith(CHATWOOT_REPLY_PREFIX):
                self.thread = await self.state.update(self.cid, notes_cursor=position + 1)
                continue
            by = (note.get("by") or {}).get("name") or "an agent"
            await self.post(
                self.source(handoff.id, f"note:{note.get('id')}"),
                Post(f"Note by {by} in the inbox: {note.get('text') or ''}"),
                notes_cursor=position + 1,
            )

    async def notices(self, handoff: Handoff) -> None:
        """Notes for agents about what they did in Chatwoot (:meth:`ChatwootState.add_notice`),
        each in the Chatwoot conversation it concerns."""
        start = self.thread.notices_cursor
        for offset, notice in enumerate(await self.state.notices(self.cid, start)):
            await self.post(
                f"{OUR_SOURCE_PREFIX}notice:{notice['id']}",
                Post(str(notice["text"])),
                conversation=int(notice["conversation"]),
                notices_cursor=start + offset + 1,
            )
            if self.out_of_time():
                return

    async def close(self, handoff: Handoff) -> None:
        """A closed hand-off: the closing note, and the conversation resolved in Chatwoot
        (unless that is where it was resolved or handed back)."""
        if not self.thread.done("closing_note"):
            await self.post(
                self.source(handoff.id, "closed"), Post(closing_note(handoff)), closing_note=1
            )
        closed_by = handoff.closed_by.id if handoff.closed_by else ""
        if not closed_by.startswith(AGENT_ID_PREFIX):
            await self.api.toggle_status(self.thread.conversation, RESOLVED)
        self.thread = await self.state.update(self.cid, closed=1)

    async def retire(self) -> None:
        """The Chatwoot conversation of an earlier hand-off whose end was never mirrored (a new
        hand-off replaced its record first): noted and resolved."""
        old = self.thread.handoff_id
        if not self.thread.done("closing_note"):
            await self.post(
                self.source(old, "closed"),
                Post("This request ended; the customer's newer request is a new conversation."),
                closing_note=1,
            )
        await self.api.toggle_status(self.thread.conversation, RESOLVED)
        self.thread = await self.state.update(self.cid, closed=1)
