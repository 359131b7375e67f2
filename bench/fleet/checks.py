"""What became of every customer message of a fleet run, read back from Redis and the fakes.

The standard, checked after the traffic (``bench.fleet.customers.Traffic``) stops:

- every accepted message is in its conversation's event log exactly once (matched on the SMS
  ``message_sid``, the chat ``client_message_id``, or for voice the call's user message with the
  turn's text, alone or joined to the next one, after Rasa's reverts);
- each got its reply or the channel's explicit apology;
- no SMS was sent twice for one inbound message (the fake Twilio's records: a REST send besides
  an inline answer, the same body twice for one message, or one idempotency token twice);
- every notification the shop's backend got accepted was sent, and texted exactly once (the
  fake Twilio's records), however often it retried and whichever replica died meanwhile;
- every customer promised a callback got exactly one call (the fake VAPI API's records), its
  callback recorded sent with that call's id, whichever replica died meanwhile;
- nothing is left "running": durable work items (``omni:{cid}:work:<kind>:<id>``,
  omnichannel/leases.py: SMS turns and outbox, chat turns, voice turns) and calls' in-flight
  turns (the ``inflight`` field of a call's state).

:func:`check` waits up to ``settle_seconds`` for running work to finish (a takeover after a
SIGKILL waits out a lease) and returns a :class:`Report`: figures per channel, reply-time
percentiles outside and during disruptions, and ``problems``, empty when the run met the
standard.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import redis
import redis.asyncio as aioredis

from bench.fleet.customers import (
    CALLBACK_PROMISE,
    CHANNELS,
    CHAT,
    NOTIFICATION_SMS,
    SMS,
    Sent,
    Traffic,
)
from bench.fleet.local_fleet import running_work
from connectors.notifications.state import item_id_of
from omnichannel.addresses import phone_address
from omnichannel.identity import IdentityStore
from omnichannel.outbound.items import OutboundStore

#: How many examples of each kind of failure a report names.
EXAMPLES = 5


def percentile(values: Sequence[float], share: float) -> Optional[float]:
    """The nearest-rank percentile (``share`` in 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 1))
    return ordered[int(rank) - 1]


def _user_events(events: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The user events that count: each ``rewind`` (UserUtteranceReverted) takes the last back."""
    kept: List[Dict[str, Any]] = []
    for event in events:
        if event.get("event") == "user":
            kept.append(event)
        elif event.get("event") == "rewind" and kept:
            kept.pop()
    return kept


def occurrences(item: Sent, user_events: Sequence[Dict[str, Any]]) -> int:
    """How often ``item`` is in its conversation's (effective) user events."""
    count = 0
    for event in user_events:
        metadata = event.get("metadata") or {}
        if item.channel == SMS:
            count += metadata.get("message_sid") == item.key
        elif item.channel == CHAT:
            count += metadata.get("client_message_id") == item.key
        elif metadata.get("call_id") == item.key:
            # A turn whose answer the caller never heard is joined to the next one (VAPI
            # resends it unanswered; connectors/vapi/hearing.py joins with spaces), so a voice
            # message may be one part of the utterance Rasa got. The customers' utterances
            # (bench.fleet.customers.UTTERANCES) do not contain one another.
            count += f" {item.text} " in f" {event.get('text') or ''} "
    return count


def left_running(client: redis.Redis) -> List[str]:
    """Work still marked running in Redis, one line per item (empty: nothing)."""
    found: List[str] = []
    for key in client.scan_iter(match="omni:*:vapi:call:*", count=1000):
        if client.type(key) == b"hash" and client.hexists(key, "inflight"):
            found.append(f"voice call {key.decode()} has a turn in flight")
    found += [f"work item {key} running (owner {owner})" for key, owner in running_work(client)]
    return found


@dataclass
class ChannelFigures:
    sent: int = 0
    accepted: int = 0
    refused: int = 0
    lost: int = 0
    duplicated: int = 0
    unanswered: int = 0
    apologies: int = 0
    normal: List[float] = field(default_factory=list)
    disrupted: List[float] = field(default_factory=list)


@dataclass
class Report:
    channels: Dict[str, ChannelFigures]
    sms_sent_twice: int
    running: List[str]
    problems: List[str]
    disruptions: List[Tuple[float, Optional[float], str]]
    seconds: float
    killed_holding: List[str]
    #: Notifications: sent by the backend, accepted, and texted exactly once.
    notifications: Tuple[int, int, int] = (0, 0, 0)
    #: Callbacks: asked for, promised, and called exactly once.
    callbacks: Tuple[int, int, int] = (0, 0, 0)

    @property
    def accepted(self) -> int:
        return sum(figures.accepted for figures in self.channels.values())

    def table(self) -> str:
        """The figures as a plain-text table (README-ready)."""

        def ms(values: List[float], share: float) -> str:
            value = percentile(values, share)
            return "-" if value is None else f"{value * 1000:.0f}"

        head = (
            f"{'channel':<8}{'sent':>7}{'accepted':>10}{'refused':>9}{'lost':>6}{'dup':>5}"
            f"{'unanswered':>12}{'apology':>9}  {'p50/p99 ms normal':>19}  "
            f"{'p50/p99 ms disrupted':>22}"
        )
        lines = [head]
        for name, f in self.channels.items():
            lines.append(
                f"{name:<8}{f.sent:>7}{f.accepted:>10}{f.refused:>9}{f.lost:>6}"
                f"{f.duplicated:>5}{f.unanswered:>12}{f.apologies:>9}  "
                f"{ms(f.normal, 0.5) + '/' + ms(f.normal, 0.99):>19}  "
                f"{ms(f.disrupted, 0.5) + '/' + ms(f.disrupted, 0.99):>22}"
            )
        kinds = Counter(what for _, _, what in self.disruptions)
        lines.append(
            f"SMS sent twice: {self.sms_sent_twice}; left running: {len(self.running)}; "
            f"disruptions: {dict(kinds)}; traffic {self.seconds:.0f} s; work held by killed "
            f"replicas: {dict(Counter(self.killed_holding))}"
        )
        sent, accepted, once = self.notifications
        lines.append(f"notifications: {sent} sent, {accepted} accepted, {once} texted once")
        asked, promised, called = self.callbacks
        lines.append(f"callbacks: {asked} asked for, {promised} promised, {called} called once")
        return "\n".join(lines)


def _disrupted(item: Sent, windows: Sequence[Tuple[float, Optional[float], str]]) -> bool:
    """Whether the message was under way (sent, not yet answered) during a disruption."""
    now = time.time()
    answered = item.replied_at or now
    return any(item.started <= (end or now) and answered >= start for start, end, _ in windows)


async def _conversations(client: redis.Redis, items: Sequence[Sent]) -> Dict[str, Optional[str]]:
    """Customer → conversation id (phone customers through the identity records)."""
    found: Dict[str, Optional[str]] = {
        item.customer: item.conversation_id for item in items if item.channel == CHAT
    }
    phones = {item.customer for item in items if item.channel != CHAT}
    kwargs = client.connection_pool.connection_kwargs
    async_client = aioredis.Redis(
        host=kwargs["host"], port=kwargs["port"], password=kwargs.get("password")
    )
    try:
        store = IdentityStore(async_client)
        for phone in phones:
            found[phone] = await store.lookup(phone_address(phone))
    finally:
        await async_client.close()
    return found


def _notification_bodies(traffic: Traffic) -> set:
    return {NOTIFICATION_SMS.format(item.order) for item in traffic.notifications}


async def _outbound_items(
    client: redis.Redis, conversations: Dict[str, Optional[str]], traffic: Traffic
) -> Dict[str, Any]:
    """Idempotency key → the notification's item (None when not recorded)."""
    kwargs = client.connection_pool.connection_kwargs
    store = OutboundStore(f"redis://{kwargs['host']}:{kwargs['port']}")
    found: Dict[str, Any] = {}
    for item in traffic.notifications:
        cid = conversations.get(item.number)
        found[item.key] = await store.get(cid, item_id_of(item.key)) if cid else None
    return found


def notification_problems(
    traffic: Traffic, items: Dict[str, Any]
) -> Tuple[int, Dict[str, List[str]]]:
    """How many accepted notifications were texted exactly once, and what went wrong."""
    assert traffic.fleet.twilio is not None
    problems: Dict[str, List[str]] = defaultdict(list)
    once = 0
    for item in traffic.notifications:
        if not item.accepted:
            continue
        body = NOTIFICATION_SMS.format(item.order)
        texts = [m for m in traffic.fleet.twilio.messages_to(item.number) if m.body == body]
        recorded = items.get(item.key)
        label = f"{item.key} to a customer ({item.status}, {item.errors})"
        if recorded is None or recorded.status != "sent":
            status = recorded.status if recorded else "not recorded"
            problems["notification accepted, not sent"].append(f"{label}: {status}")
        if len(texts) == 1:
            once += 1
        elif len(texts) > 1:
            problems["notification texted more than once"].append(f"{label}: {len(texts)}x")
        elif recorded is not None and recorded.channel == "sms":
            problems["notification recorded sent, not texted"].append(label)
    return once, problems


def _callback_items(client: redis.Redis, cid: Optional[str]) -> List[Dict[str, str]]:
    """The conversation's callback items, as stored (field -> value)."""
    if not cid:
        return []
    found = []
    for item_id in client.zrange(f"omni:{{{cid}}}:outbound:items", 0, -1):
        raw = client.hgetall(f"omni:{{{cid}}}:outbound:item:{item_id.decode()}")
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        if fields.get("kind") == "callback":
            found.append(fields)
    return found


def callback_problems(
    traffic: Traffic,
    client: redis.Redis,
    conversations: Dict[str, Optional[str]],
    settle_seconds: float,
) -> Tuple[int, int, Dict[str, List[str]]]:
    """How many customers were promised a call and got exactly one, and what went wrong.
    Waits (up to ``settle_seconds``) for promised calls still being placed."""
    vapi = traffic.fleet.control
    assert vapi is not None
    promised = [
        item
        for item in traffic.callback_requests
        if item.accepted and CALLBACK_PROMISE in item.reply
    ]

    def calls_to(number: str) -> List[Dict[str, Any]]:
        return [c for c in list(vapi.calls) if c["customer"]["number"] == number]

    deadline = time.monotonic() + settle_seconds
    while time.monotonic() < deadline and any(not calls_to(i.customer) for i in promised):
        time.sleep(0.5)
    problems: Dict[str, List[str]] = defaultdict(list)
    once = 0
    for item in promised:
        calls = calls_to(item.customer)
        items = _callback_items(client, conversations.get(item.customer))
        label = f"{item.key} (conversation {conversations.get(item.customer)}, {item.errors})"
        if len(calls) == 1:
            once += 1
            sent = [i for i in items if i.get("status") == "sent"]
            if len(sent) != 1 or calls[0]["id"] not in sent[0].get("outcome", ""):
                statuses = [i.get("status") for i in items]
                problems["callback called, not recorded sent with its call"].append(
                    f"{label}: {statuses}"
                )
        elif calls:
            problems["callback called more than once"].append(f"{label}: {len(calls)} calls")
        else:
            statuses = [f"{i.get('status')} {i.get('reason')}" for i in items]
            problems["callback promised, never called"].append(f"{label}: {statuses}")
    return len(promised), once, problems


def sms_sent_twice(traffic: Traffic) -> Tuple[int, List[str]]:
    """Inbound SMS answered more than once, judged from what the fake Twilio received (the
    shop's notifications, checked on their own, aside)."""
    assert traffic.fleet.twilio is not None
    notified = _notification_bodies(traffic)
    outbound = [m for m in traffic.fleet.twilio.messages if m.body not in notified]
    examples: List[str] = []
    twice = 0
    by_number: Dict[str, List[Sent]] = defaultdict(list)
    for item in traffic.sent:
        if item.channel == SMS:
            by_number[item.customer].append(item)
    for number, items in by_number.items():
        items.sort(key=lambda item: item.started)
        answers: Dict[str, List[str]] = defaultdict(list)
        for message in outbound:
            if message.to != number:
                continue
            earlier = [item for item in items if item.started <= message.received_at]
            if earlier:
                answers[earlier[-1].key].append(message.body)
        for item in items:
            bodies = answers.get(item.key, [])
            if (item.inline and bodies) or len(bodies) != len(set(bodies)):
                twice += 1
                examples.append(f"{item.key} ({item.text!r}): inline={item.inline} REST={bodies}")
    tokens = Counter(m.idempotency_token for m in outbound if m.idempotency_token)
    repeated = [token for token, count in tokens.items() if count > 1]
    twice += len(repeated)
    examples += [f"idempotency token {token} sent {tokens[token]}x" for token in repeated]
    return twice, examples


def check(traffic: Traffic, settle_seconds: float = 60) -> Report:
    """Wait for running work to finish (up to ``settle_seconds``), then judge every message."""
    fleet = traffic.fleet
    started = min((item.started for item in traffic.sent), default=time.time())
    ended = max((item.replied_at or item.started for item in traffic.sent), default=started)
    with fleet.admin_client() as client:
        deadline = time.monotonic() + settle_seconds
        while (running := left_running(client)) and time.monotonic() < deadline:
            time.sleep(0.5)
        conversations = asyncio.run(_conversations(client, traffic.sent))
        # Notified customers are texters: their conversations are among these.
        outbound_items = asyncio.run(_outbound_items(client, conversations, traffic))
        promised, called_once, called_problems = callback_problems(
            traffic, client, conversations, settle_seconds
        )
        logs: Dict[str, List[Dict[str, Any]]] = {}
        for cid in {cid for cid in conversations.values() if cid}:
            raw = client.lrange(f"omni:{{{cid}}}:events", 0, -1)
            logs[cid] = _user_events(json.loads(entry) for entry in raw)
    figures = {channel: ChannelFigures() for channel in CHANNELS}
    problems: Dict[str, List[str]] = defaultdict(list)
    for item in traffic.sent:
        f = figures[item.channel]
        f.sent += 1
        if not item.accepted:
            f.refused += 1
            continue
        f.accepted += 1
        conversation = conversations.get(item.customer)
        seen = occurrences(item, logs.get(conversation, [])) if conversation else 0
        label = (
            f"{item.channel} {item.key} {item.text!r} (conversation {conversation}, {item.errors})"
        )
        if seen == 0:
            f.lost += 1
            problems["lost (accepted, not in the event log)"].append(label)
        elif seen > 1:
            f.duplicated += 1
            problems["in the event log more than once"].append(f"{label}: {seen}x")
        if item.replied_at is None:
            f.unanswered += 1
            problems["no reply and no apology"].append(label)
            continue
        f.apologies += item.apology
        seconds = item.reply_seconds or 0.0
        (f.disrupted if _disrupted(item, traffic.disruptions) else f.normal).append(seconds)
    twice, twice_examples = sms_sent_twice(traffic)
    if twice:
        problems["SMS sent twice"] = twice_examples
    once, notified_problems = notification_problems(traffic, outbound_items)
    problems.update(notified_problems)
    problems.update(called_problems)
    if running:
        problems[f"left running after {settle_seconds:.0f} s"] = running
    return Report(
        channels=figures,
        sms_sent_twice=twice,
        running=running,
        problems=[
            f"{what}: {len(examples)}, e.g. " + "; ".join(examples[:EXAMPLES])
            for what, examples in problems.items()
        ],
        disruptions=list(traffic.disruptions),
        seconds=ended - started,
        killed_holding=list(traffic.killed_holding),
        notifications=(
            len(traffic.notifications),
            sum(1 for n in traffic.notifications if n.accepted),
            once,
        ),
        callbacks=(len(traffic.callback_requests), promised, called_once),
    )
