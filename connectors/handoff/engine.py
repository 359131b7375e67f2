"""The hand-off engine of a Rasa server process: every change to a hand-off goes through here,
whoever asks (the inbox's routes, a helpdesk's webhooks, the customer's own turn, the sweeper of
waiting hand-offs), so each has the same effects everywhere:

- the record's transition (:class:`~omnichannel.handoff.state.Handoff`), atomic across the fleet
  (:class:`~omnichannel.handoff.store.HandoffStore`);
- the bot's side in Rasa's terms (:mod:`.bot`): paused while a hand-off is open, resumed when
  it closes, with every slot as it was;
- what the customer is told (:mod:`.messages`: durable, once, on a channel they can be reached
  on, :mod:`omnichannel.handoff.reach`), in the domain's words (``utter_handoff_*``);
- the metrics (``omnichannel_handoffs``, ``omnichannel_handoff_claim_seconds``,
  ``omnichannel_handoffs_open``) and the helpdesks' syncs (:mod:`.desk`).

One engine per process (:func:`handoff_engine`), configured by the ``handoff`` channel's
options (:class:`HandoffOptions`, credentials.yml) and the ``HANDOFF_*`` settings; channels that
need it start it when the server starts (:meth:`HandoffEngine.start`, idempotent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from typing import Any, AsyncIterator, Dict, List, Optional, Set

from pydantic import Field, validator
from rasa.shared.core.events import BotUttered

from connectors.event_log.reading import event_log_of
from connectors.handoff import bot
from connectors.handoff.desk import AgentDesk
from connectors.handoff.messages import CustomerMessages
from connectors.turns.run import processor_of
from connectors.twilio_sms.outbox import SmsOutbox
from omnichannel import metrics
from omnichannel.channels import OUTPUT_OF_KIND, kind_of_event
from omnichannel.handoff.policy import (
    DEFAULT_ANSWER_INTENTS,
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_WITHDRAW_INTENTS,
    HeldTurn,
)
from omnichannel.handoff.reach import Reach, reach, twilio_configured
from omnichannel.handoff.state import QUEUED, Actor, Handoff, TransitionRefused
from omnichannel.handoff.store import HandoffStore
from omnichannel.identity import IdentityStore
from omnichannel.leases import InFlightWork, Lease, takeover
from omnichannel.options import ConnectorOptions
from omnichannel.redis_client import REDIS_FAILURES, LuaScript, conversation_key, redis_client
from omnichannel.settings import Settings, load_settings
from omnichannel.sms_sender import SmsSender
from omnichannel.tasks import BackgroundTasks, cancellable

logger = logging.getLogger(__name__)

DESK_SYNC = "desk_sync"
#: The embedded inbox's name among the desks people can answer in.
INBOX = "inbox"
#: How far back the customer's latest message is looked for (their "last used" channel).
LAST_CHANNEL_LOOKBACK = 200
#: A desk sync failing this many times in a row is given up (and logged as an error).
MAX_SYNC_ATTEMPTS = 20
#: How long one conversation's sync of one desk may hold its lock.
SYNC_LOCK_SECONDS = 30
#: How often a replica says which desks it serves (:meth:`HandoffStore.heartbeat`).
HEARTBEAT_SECONDS = 10.0

_UNLOCK = LuaScript(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)


class HandoffOptions(ConnectorOptions):
    """Tunables from credentials.yml (``connectors.handoff.channel.HandoffInput``)."""

    #: Intents that take back a request while nobody has claimed it ("never mind").
    withdraw_intents: List[str] = Field(
        default_factory=lambda: list(DEFAULT_WITHDRAW_INTENTS), max_items=100
    )
    #: Questions the bot answers while the customer waits (the request keeps its place).
    answer_intents: List[str] = Field(
        default_factory=lambda: list(DEFAULT_ANSWER_INTENTS), max_items=100
    )
    #: NLU confidence those intents need; below it a message waits for the person.
    min_confidence: float = Field(default=DEFAULT_MIN_CONFIDENCE, ge=0, le=1)
    #: How often each replica looks for waiting notices and hand-offs to give up.
    sweep_seconds: float = Field(default=1.0, gt=0, le=60)
    #: Longest reply an agent may send.
    max_reply_chars: int = Field(default=1600, ge=1, le=10_000)
    #: Days an open hand-off's record is kept after its last change (a claimed one that
    #: nobody closes; the customer's next message then finds it gone and the bot answers).
    open_days: int = Field(default=14, ge=1, le=90)
    #: Hours a closed hand-off stays visible to agents.
    closed_hours: int = Field(default=72, ge=1, le=24 * 30)

    @validator("withdraw_intents", "answer_intents", each_item=True)
    def _intent_name(cls, name: str) -> str:  # noqa: N805 - pydantic's validator signature
        if not 0 < len(name) <= 100:
            raise ValueError("an intent name has 1 to 100 characters")
        return name


class Unreachable(Exception):
    """The reply cannot go out on the channel asked for; the message says why (for agents)."""


class HandoffEngine:
    """See the module docstring."""

    def __init__(self, settings: Settings, options: Optional[HandoffOptions] = None) -> None:
        self.settings = settings
        self.waiting = settings.handoff_waiting
        self.options = options or HandoffOptions()
        self.store = HandoffStore(
            settings.redis_url,
            open_ttl=self.options.open_days * 86400,
            closed_ttl=self.options.closed_hours * 3600,
        )
        self.outbox = (
            SmsOutbox(settings.redis_url, self._sms_sender) if twilio_configured(settings) else None
        )
        self.messages = CustomerMessages(
            settings.redis_url, self.rasa_agent, self.outbox, self.store.announce
        )
        self.desk_work = InFlightWork(settings.redis_url, DESK_SYNC)
        self.desks: Dict[str, AgentDesk] = {}
        #: Desks this replica serves (the inbox, helpdesks), announced by its heartbeat.
        self.served: Set[str] = set()
        self.app_context: Any = None
        self._background = BackgroundTasks("hand-offs")
        self._sweeper = BackgroundTasks("hand-off sweeper", in_flight=False)
        self._last_heartbeat = 0.0

    def configure(self, options: HandoffOptions) -> None:
        """Takes the ``handoff`` channel's options (read before the server starts)."""
        self.options = options
        self.store.open_ttl = options.open_days * 86400
        self.store.closed_ttl = options.closed_hours * 3600

    @property
    def policy(self) -> HeldTurn:
        return HeldTurn(
            frozenset(self.options.withdraw_intents),
            frozenset(self.options.answer_intents),
            self.options.min_confidence,
        )

    def _sms_sender(self) -> SmsSender:
        return SmsSender(
            self.settings, identity=IdentityStore(redis_client(self.settings.redis_url))
        )

    # -- the server -----------------------------------------------------------------------

    def start(self, app_context: Any) -> None:
        """From the server's start on: resume this kind of work other replicas left, look for
        due waiting notices and give-ups, and say which desks this replica serves. Idempotent
        (every channel that needs the engine calls it)."""
        if self.app_context is not None:
            return
        self.app_context = app_context
        takeover().register(self.messages.work, self.messages.deliver)
        takeover().register(self.desk_work, self._sync)
        self._sweeper.start(self._sweep_forever(), "waiting hand-offs")

    def rasa_agent(self) -> Any:
        agent = getattr(self.app_context, "agent", None)
        if agent is None:
            raise RuntimeError("the hand-off engine runs inside a started Rasa server")
        return agent

    def event_log(self) -> Any:
        """The conversations' event logs (for desks: ``read_events``, ``event_count``)."""
        return event_log_of(self.rasa_agent(), "hand-offs")

    async def serve(self, desk: str) -> None:
        """This replica serves ``desk`` (people can answer there): the bot may promise them.
        Said at once, then renewed by the sweeper."""
        self.served.add(desk)
        now = time.time()
        await self.store.heartbeat(desk, now)
        self._last_heartbeat = now

    async def add_desk(self, desk: AgentDesk) -> None:
        """A helpdesk kept in sync with handed-off conversations (see :mod:`.desk`)."""
        self.desks[desk.name] = desk
        await self.serve(desk.name)

    @property
    def owning_desk(self) -> Optional[str]:
        """The desk where agents answer, when one owns the agent side (not the inbox)."""
        return next((name for name, d in self.desks.items() if d.owns_agent_side), None)

    # -- where the customer is ------------------------------------------------------------

    async def last_customer_channel(self, conversation_id: str) -> Optional[str]:
        """The channel kind of the customer's latest message."""
        log = self.event_log()
        events = await log.read_events(conversation_id, -LAST_CHANNEL_LOOKBACK, -1)
        for event in reversed(events):
            if event.get("event") == "user":
                return kind_of_event(event)
        return None

    async def reach(self, conversation_id: str) -> Reach:
        profile = await IdentityStore(redis_client(self.settings.redis_url)).profile(
            conversation_id
        )
        return reach(profile, self.settings, await self.last_customer_channel(conversation_id))

    # -- agents' actions --------------------------------------------------------------------

    async def claim(
        self, conversation_id: str, agent: Actor, *, take_over: bool = False
    ) -> Handoff:
        """``agent`` takes the conversation (``take_over``: from another agent, recorded)."""
        now = time.time()
        before, after = await self.store.update(
            conversation_id, lambda h: h.claim(agent, now, take_over=take_over)
        )
        if after is not before:
            if before.state == QUEUED:
                metrics.handoff_event(after.channel, "claimed")
                metrics.HANDOFF_CLAIM_SECONDS.labels(channel=after.channel).observe(
                    max(0.0, now - after.requested_at)
                )
            else:
                metrics.handoff_event(after.channel, "taken_over")
            logger.info("hand-off of %s claimed by agent %s", conversation_id, agent.id)
            await self.changed(conversation_id)
        return after

    async def hand_back(self, conversation_id: str, agent: Actor) -> Handoff:
        """The bot takes the conversation back and tells the customer so."""
        now = time.time()
        _, after = await self.store.update(conversation_id, lambda h: h.hand_back(agent, now))
        metrics.handoff_event(after.channel, "handed_back")
        await self._bot_back(after, "handed_back", agent)
        await self.notify(after, "utter_handoff_returned", "returned")
        await self.changed(conversation_id)
        return after

    async def resolve(self, conversation_id: str, agent: Actor) -> Handoff:
        """Done: the bot answers the customer's next message (nothing is said now: the agent
        said what was needed)."""
        now = time.time()
        _, after = await self.store.update(conversation_id, lambda h: h.resolve(agent, now))
        metrics.handoff_event(after.channel, "resolved")
        await self._bot_back(after, "resolved", agent)
        await self.changed(conversation_id)
        return after

    async def reply(
        self, conversation_id: str, agent: Actor, message_id: str, channel: str, text: str
    ) -> bool:
        """Sends ``agent``'s reply on ``channel``: recorded (durably) before this returns, sent
        once; False when ``message_id`` was sent before (a resend). Raises TransitionRefused
        (the agent does not hold the conversation), Unreachable, ValueError (empty or too
        long), LookupError (no hand-off)."""
        text = text.strip()
        if not text or len(text) > self.options.max_reply_chars:
            raise ValueError(f"a reply has 1 to {self.options.max_reply_chars} characters")
        handoff = await self.store.get(conversation_id)
        if handoff is None:
            raise LookupError("this conversation has no hand-off")
        if not handoff.held_by(agent.id):
            holder = handoff.agent.name if handoff.agent else None
            raise TransitionRefused(
                f"{holder} holds this conversation; take it over to answer it"
                if holder
                else f"claim the conversation before answering it (it is {handoff.state})"
            )
        found = await self.reach(conversation_id)
        if channel not in found.available:
            raise Unreachable(found.unavailable.get(channel) or f"cannot reply by {channel}")
        event = BotUttered(
            text,
            metadata={
                "agent": {"id": agent.id, "name": agent.name},
                bot.HANDOFF: {"event": "agent_reply", "handoff_id": handoff.id},
            },
        )
        sent = await self.messages.send(conversation_id, message_id, channel, event)
        if sent:
            await self.changed(conversation_id)
        return sent

    async def note(
        self, conversation_id: str, agent: Actor, note_id: str, text: str
    ) -> Dict[str, Any]:
        """An internal note by ``agent`` (never shown to the customer); once per ``note_id``."""
        text = text.strip()
        if not text or len(text) > self.options.max_reply_chars:
            raise ValueError(f"a note has 1 to {self.options.max_reply_chars} characters")
        if await self.store.get(conversation_id) is None:
            raise LookupError("this conversation has no hand-off")
        for existing in await self.store.notes(conversation_id):
            if existing.get("id") == note_id:
                return existing
        note = {"id": note_id, "at": time.time(), "by": agent.as_dict(), "text": text}
        await self.store.add_note(conversation_id, note)
        return note

    # -- the customer's side ----------------------------------------------------------------

    async def notify(
        self, handoff: Handoff, response: str, what: str, channel: Optional[str] = None
    ) -> bool:
        """Tells the customer ``response`` (a domain response, on their channel or
        ``channel``), once per hand-off and ``what``; False when they cannot be reached."""
        cid = handoff.conversation_id
        found = await self.reach(cid)
        target = channel if channel in found.available else found.default
        if target is None:
            logger.warning("hand-off of %s: %s not sent (customer unreachable)", cid, response)
            return False
        tracker = await processor_of(self.rasa_agent()).get_tracker(cid)
        event = await bot.bot_message(
            self.rasa_agent(),
            tracker,
            response,
            OUTPUT_OF_KIND[target],
            {bot.HANDOFF: {"event": what, "handoff_id": handoff.id}},
            values=self.template_values(time.time()),
        )
        if event is None:
            return False
        await self.messages.send(cid, f"{handoff.id}-{what}", target, event)
        return True

    def template_values(self, now: float) -> Dict[str, str]:
        """Values the ``utter_handoff_*`` responses may use: ``{handoff_back}``, when the team
        is next there (e.g. "on Monday at 9:00 (New York time)")."""
        hours = self.waiting.hours
        back = self.waiting.reopens(now)
        return {"handoff_back": hours.describe(back if back is not None else now, now)}

    async def _bot_back(self, handoff: Handoff, why: str, by: Actor) -> None:
        """Resumes the bot after ``handoff`` closed. A failure here leaves the tracker paused
        while the record is closed; the customer's next message finds that and resumes it
        (:mod:`.turns`), so nothing stays stuck."""
        try:
            await bot.resume_locked(
                self.rasa_agent(), handoff.conversation_id, why, by=by.as_dict()
            )
        except Exception:  # noqa: BLE001 - the record decides; the next turn repairs the tracker
            logger.exception("hand-off of %s closed, bot not resumed yet", handoff.conversation_id)

    # -- waiting hand-offs (every replica sweeps; the record's atomic changes pick one) -----

    async def sweep_once(self, now: Optional[float] = None) -> int:
        """Sends the waiting notices and gives up the hand-offs that are due; returns how many
        it changed."""
        now = time.time() if now is None else now
        if self.served and now - self._last_heartbeat >= HEARTBEAT_SECONDS:
            for desk in self.served:
                await self.store.heartbeat(desk, now)
            self._last_heartbeat = now
        for state, count in (await self.store.depth()).items():
            metrics.HANDOFFS_OPEN.labels(state=state).set(count)
        changed = 0
        for cid in await self.store.due(now):
            handoff = await self.store.get(cid)
            if handoff is None:
                await self.store.unindex(cid)  # the record expired or was erased
                continue
            if handoff.state != QUEUED:
                await self.store.reindex(handoff)  # a stale entry of the due index
                continue
            try:
                if handoff.give_up_at is not None and handoff.give_up_at <= now:
                    await self.give_up(handoff, now)
                elif handoff.notice_at is not None and handoff.notice_at <= now:
                    await self._wait_notice(handoff, now)
                else:
                    continue
            except TransitionRefused:
                continue  # another replica (or an agent) moved it first
            changed += 1
        return changed

    async def give_up(self, handoff: Handoff, now: float) -> Handoff:
        after = handoff.abandon(Actor.system("timeout"), now, "nobody claimed it in time")
        await self.store.save(handoff, after)
        metrics.handoff_event(after.channel, "abandoned")
        await self._bot_back(after, "given_up", Actor.system("timeout"))
        await self.notify(after, "utter_handoff_given_up", "given_up")
        await self.changed(after.conversation_id)
        return after

    async def _wait_notice(self, handoff: Handoff, now: float) -> None:
        after = handoff.with_notice_sent(now)
        await self.store.save(handoff, after)
        await self.notify(after, "utter_handoff_wait_notice", "wait_notice")
        await self.changed(after.conversation_id)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.sweep_seconds)
            try:
                await cancellable(self.sweep_once())
            except REDIS_FAILURES as error:
                logger.warning("hand-off sweep failed: %s", type(error).__name__)
            except Exception:  # noqa: BLE001 - one bad record must not stop the sweeper
                logger.exception("hand-off sweep failed")

    # -- helpdesks ----------------------------------------------------------------------------

    async def conversation_changed(self, conversation_id: str) -> None:
        """Something agents should see reached a conversation outside a customer's turn (a
        call's end-of-call report with its transcript): told like a customer's message when
        the conversation has an open hand-off. A Redis failure here is logged, not raised (the
        change itself is stored)."""
        try:
            handoff = await self.store.get(conversation_id)
        except REDIS_FAILURES as error:
            logger.warning("hand-off of %s not looked up: %s", conversation_id, error)
            return
        if handoff is not None and handoff.is_open:
            await self.customer_wrote(conversation_id)

    async def customer_wrote(self, conversation_id: str) -> None:
        """The customer wrote while a hand-off is open: agents' pages refresh the queue's last
        words, helpdesks sync."""
        try:
            await self.store.announce(conversation_id, "handoff_activity")
        except REDIS_FAILURES as error:
            logger.warning("hand-off activity of %s not announced: %s", conversation_id, error)
        await self.changed(conversation_id)

    async def changed(self, conversation_id: str) -> None:
        """Asks every helpdesk to sync the conversation (durably; see :mod:`.desk`)."""
        for name in self.desks:
            try:
                lease = await self.desk_work.record(
                    conversation_id, f"{name}-{uuid.uuid4().hex}", {"desk": name}
                )
            except REDIS_FAILURES as error:
                logger.error("%s sync of %s not recorded: %s", name, conversation_id, error)
                continue
            if isinstance(lease, Lease):
                self._background.start(self._sync_held(lease), f"{name} sync")

    async def _sync_held(self, lease: Lease) -> None:
        async with self.desk_work.held(lease):
            await self._sync(lease)

    async def _sync(self, lease: Lease) -> None:
        name = lease.payload["desk"]
        desk = self.desks.get(name)
        if desk is None:
            logger.error("desk %s is not served here; its sync stays for a replica that is", name)
            return
        try:
            async with self.sync_lock(lease.conversation_id, name):
                await desk.sync(lease.conversation_id, self)
        except Exception as error:  # noqa: BLE001 - retried after the lease, by any replica
            if lease.attempt < MAX_SYNC_ATTEMPTS:
                delay = desk.retry_delay(lease.attempt)
                logger.warning(
                    "%s sync of %s failed (attempt %d, retried in %.0f s): %s",
                    name,
                    lease.conversation_id,
                    lease.attempt,
                    delay,
                    error,
                )
                if delay > 0:
                    with contextlib.suppress(*REDIS_FAILURES):  # then: after the lease
                        await self.desk_work.postpone(lease, delay)
                return
            logger.error("%s sync of %s given up: %s", name, lease.conversation_id, error)
        await self.desk_work.complete(lease, {"desk": name})

    @contextlib.asynccontextmanager
    async def sync_lock(self, conversation_id: str, desk: str) -> AsyncIterator[None]:
        """One sync of a conversation per desk at a time, fleet-wide (waits for the other)."""
        key = conversation_key(conversation_id, "desk", desk, "sync")
        token = secrets.token_hex(8)
        client = redis_client(self.settings.redis_url)
        deadline = time.monotonic() + SYNC_LOCK_SECONDS
        while not await client.set(key, token, nx=True, px=SYNC_LOCK_SECONDS * 1000):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{desk} sync of {conversation_id} waited too long")
            await asyncio.sleep(0.05)
        try:
            yield
        finally:
            with contextlib.suppress(*REDIS_FAILURES):
                await _UNLOCK(client, [key], [token])


_engine: Optional[HandoffEngine] = None


def handoff_engine() -> HandoffEngine:
    """The process's engine, made on first use from the settings (default options until the
    ``handoff`` channel configures it)."""
    global _engine
    if _engine is None or _engine.settings is not load_settings():
        _engine = HandoffEngine(load_settings(), _engine.options if _engine else None)
    return _engine
