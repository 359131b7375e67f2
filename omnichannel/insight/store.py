"""The insight figures in Redis: per day, per channel, updated as events are stored, read for a
period without touching any event log.

Keys (all under the hash tag ``{insight}``, so one script updates a batch's figures atomically
and a period's reads are single-slot on a Cluster; every key expires ``retention_days`` after
its day's last update):

- ``omni:{insight}:<day>:counts``: HASH, ``<channel>|<figure>`` → count (turns, fallbacks,
  barge_ins, handoffs, ``handoff_after:<intent>``, ``handoff_unavailable``,
  ``handoff_ended:<why>``, ``agent_replies``, ``reply:<bucket>``, ``call:<reason>``);
- ``omni:{insight}:<day>:active:<channel>`` and ``…:handed:<channel>``: HyperLogLogs of the
  conversations active and handed to a person (12 KB each whatever the traffic; exact for
  small counts, within 1% at scale);
- ``omni:{insight}:<day>:not_understood:<channel>``: ZSET of normalised, redacted texts by
  count, trimmed to the :data:`MAX_TEXTS` most frequent;
- ``omni:{insight}:<day>:nu:<channel>:<digest>``: SET of at most :data:`MAX_LINKS`
  conversation ids that wrote that text (the page links each to the viewer).

Per conversation, ``omni:{<cid>}:insight`` (HASH: the last message's intent and channel, and the
not-understood texts it contributed) lets a hand-off stored in a later save know what preceded
it, and lets erasure take the customer's texts out of the figures (:meth:`InsightStore.forget`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from omnichannel.insight.facts import REPLY_BUCKETS, Figures
from omnichannel.redis_client import AnyRedis, LuaScript, conversation_key, redis_client

TAG = "insight"
#: The most frequent not-understood texts kept per day and channel.
MAX_TEXTS = 500
#: Conversations linked per not-understood text.
MAX_LINKS = 20
#: Not-understood texts remembered per conversation (for erasure).
MAX_OWN_TEXTS = 50
DEFAULT_RETENTION_DAYS = 90
#: The longest period one report reads.
MAX_PERIOD_DAYS = 400

# Applies a batch's figures. KEYS: every key the batch touches (one slot: {insight}).
# ARGV: ttl seconds, then operations, each an opcode, the index of its key in KEYS, arguments:
#   h k field n       HINCRBY
#   p k member        PFADD
#   z k member cap    ZINCRBY 1, then trim to the cap's most frequent
#   s k member cap    SADD unless the set holds cap members already
#   f k field value   HSET
_RECORD = LuaScript(
    """
local ttl = tonumber(ARGV[1])
local i = 2
while i <= #ARGV do
  local op, key = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  if op == 'h' then
    redis.call('HINCRBY', key, ARGV[i + 2], ARGV[i + 3]); i = i + 4
  elseif op == 'p' then
    redis.call('PFADD', key, ARGV[i + 2]); i = i + 3
  elseif op == 'z' then
    redis.call('ZINCRBY', key, 1, ARGV[i + 2])
    local cap = tonumber(ARGV[i + 3])
    if redis.call('ZCARD', key) > cap then redis.call('ZREMRANGEBYRANK', key, 0, -cap - 1) end
    i = i + 4
  elseif op == 's' then
    if redis.call('SCARD', key) < tonumber(ARGV[i + 3]) then
      redis.call('SADD', key, ARGV[i + 2])
    end
    i = i + 4
  elseif op == 'f' then
    redis.call('HSET', key, ARGV[i + 2], ARGV[i + 3]); i = i + 4
  else
    return redis.error_reply('unknown insight op ' .. op)
  end
end
for _, key in ipairs(KEYS) do redis.call('EXPIRE', key, ttl) end
return 1
"""
)

# The conversation's own record. KEYS: its insight hash. ARGV: ttl seconds, intent ('' to keep),
# channel ('' to keep), then not-understood contributions (JSON), kept up to ARGV[4]...
# Returns the previous intent and channel.
_REMEMBER = LuaScript(
    """
local previous = redis.call('HMGET', KEYS[1], 'intent', 'channel')
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'intent', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'channel', ARGV[3]) end
if #ARGV > 4 then
  local own = cjson.decode(redis.call('HGET', KEYS[1], 'texts') or '[]')
  for i = 5, #ARGV do
    if #own < tonumber(ARGV[4]) then table.insert(own, cjson.decode(ARGV[i])) end
  end
  redis.call('HSET', KEYS[1], 'texts', cjson.encode(own))
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {previous[1] or '', previous[2] or ''}
"""
)

# Takes one conversation's texts out of the figures. KEYS: for each text, its not-understood
# list and its links. ARGV: the conversation id, then each text.
_FORGET = LuaScript(
    """
for i = 2, #ARGV do
  local list, links = KEYS[2 * i - 3], KEYS[2 * i - 2]
  local left = redis.call('ZINCRBY', list, -1, ARGV[i])
  if tonumber(left) <= 0 then redis.call('ZREM', list, ARGV[i]) end
  redis.call('SREM', links, ARGV[1])
end
return 1
"""
)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def key(day: str, *parts: str, namespace: str = "") -> str:
    """A day's key, under the tracker store's namespace (its ``key_prefix``) when it has one."""
    return conversation_key(TAG, day, *parts, namespace=namespace)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def days_between(first: datetime.date, last: datetime.date) -> List[str]:
    if last < first:
        raise ValueError("the period ends before it starts")
    if (last - first).days >= MAX_PERIOD_DAYS:
        raise ValueError(f"a period covers at most {MAX_PERIOD_DAYS} days")
    return [
        (first + datetime.timedelta(days=offset)).isoformat()
        for offset in range((last - first).days + 1)
    ]


@dataclass(frozen=True)
class NotUnderstood:
    text: str
    count: int
    conversations: Tuple[str, ...]
    #: The intent NLU ranked next, most often among the days and channels it was seen on.
    suggested_intent: str


class InsightStore:
    """Reads and writes the figures; without a client it takes ``redis_client()`` per call."""

    def __init__(
        self,
        redis: Optional[AnyRedis] = None,
        retention_days: int = DEFAULT_RETENTION_DAYS,
        namespace: str = "",
    ) -> None:
        self._redis = redis
        self.retention_days = retention_days
        #: The tracker store's ``key_prefix``: assistants sharing one Redis keep apart figures.
        self.namespace = namespace

    def key(self, day: str, *parts: str) -> str:
        return key(day, *parts, namespace=self.namespace)

    def own_key(self, conversation_id: str) -> str:
        return conversation_key(conversation_id, TAG, namespace=self.namespace)

    @property
    def redis(self) -> AnyRedis:
        return self._redis if self._redis is not None else redis_client()

    @property
    def ttl(self) -> int:
        return self.retention_days * 24 * 3600

    async def remember(
        self, conversation_id: str, figures: Figures, channel: Optional[str]
    ) -> Tuple[Optional[str], Optional[str]]:
        """Records the conversation's latest intent, channel and texts; returns the previous
        intent and channel."""
        texts = [json.dumps([d, c, t]) for d, c, t, _ in figures.not_understood]
        intent, previous_channel = await _REMEMBER(
            self.redis,
            [self.own_key(conversation_id)],
            [self.ttl, figures.last_intent or "", channel or "", MAX_OWN_TEXTS, *texts],
        )
        return (_text(intent) or None, _text(previous_channel) or None)

    async def record(self, conversation_id: str, figures: Figures) -> None:
        """Adds ``figures`` to their days' aggregates, in one script."""
        keys: Dict[str, int] = {}
        ops: List[Any] = [self.ttl]

        def op(code: str, name: str, *args: Any) -> None:
            index = keys.setdefault(name, len(keys) + 1)
            ops.extend([code, index, *args])

        for (day, channel), counts in figures.counts.items():
            for name, by in counts.items():
                op("h", self.key(day, "counts"), f"{channel}|{name}", by)
        for day, channel in figures.active:
            op("p", self.key(day, "active", channel), conversation_id)
        for day, channel in figures.handed:
            op("p", self.key(day, "handed", channel), conversation_id)
        for day, channel, text, suggested in figures.not_understood:
            op("z", self.key(day, "not_understood", channel), text, MAX_TEXTS)
            op("s", self.key(day, "nu", channel, digest(text)), conversation_id, MAX_LINKS)
            op("f", self.key(day, "suggested", channel), digest(text), suggested)
        if keys:
            await _RECORD(self.redis, list(keys), ops)

    async def forget(self, conversation_id: str) -> int:
        """Takes the conversation's not-understood texts out of the lists and its id out of
        their links, and deletes its own record; returns how many texts were taken out. (The
        counts and HyperLogLogs hold no text and no id to take out.)"""
        own_key = self.own_key(conversation_id)
        raw = await self.redis.hget(own_key, "texts")
        texts = json.loads(_text(raw)) if raw else []
        keys: List[str] = []
        args: List[Any] = [conversation_id]
        for day, channel, text in texts:
            keys += [
                self.key(day, "not_understood", channel),
                self.key(day, "nu", channel, digest(text)),
            ]
            args.append(text)
        if texts:
            await _FORGET(self.redis, keys, args)
        await self.redis.delete(own_key)
        return len(texts)

    async def report(
        self, days: Sequence[str], channels: Sequence[str], top: int = 10
    ) -> Dict[str, Any]:
        """The figures of ``days`` for each of ``channels`` and all of them together."""
        redis = self.redis
        counts: Dict[str, Dict[str, int]] = {channel: {} for channel in channels}
        per_day: List[Dict[str, Any]] = []
        for day in days:
            raw = await redis.hgetall(self.key(day, "counts"))
            day_counts: Dict[str, int] = {}
            for field, value in raw.items():
                channel, _, name = _text(field).partition("|")
                if channel in counts:
                    counts[channel][name] = counts[channel].get(name, 0) + int(value)
                    if name in ("turns", "fallbacks", "handoffs"):
                        day_counts[name] = day_counts.get(name, 0) + int(value)
            conversations = await _pfcount(redis, [self.key(day, "active", c) for c in channels])
            per_day.append({"day": day, "conversations": conversations, **day_counts})
        by_channel = {}
        for channel in channels:
            active = await _pfcount(redis, [self.key(d, "active", channel) for d in days])
            handed = await _pfcount(redis, [self.key(d, "handed", channel) for d in days])
            by_channel[channel] = _summary(counts[channel], active, handed)
        total_counts: Dict[str, int] = {}
        for channel_counts in counts.values():
            for name, value in channel_counts.items():
                total_counts[name] = total_counts.get(name, 0) + value
        active = await _pfcount(redis, [self.key(d, "active", c) for d in days for c in channels])
        handed = await _pfcount(redis, [self.key(d, "handed", c) for d in days for c in channels])
        return {
            "days": list(days),
            "channels": list(channels),
            "total": _summary(total_counts, active, handed),
            "by_channel": by_channel,
            "per_day": per_day,
            "not_understood": [
                item.__dict__ for item in await self.not_understood(days, channels, top)
            ],
        }

    async def not_understood(
        self, days: Sequence[str], channels: Sequence[str], top: int
    ) -> List[NotUnderstood]:
        """The ``top`` most frequent not-understood texts of the period, with the conversations
        that wrote them."""
        totals: Dict[str, int] = {}
        places: Dict[str, List[Tuple[str, str]]] = {}
        for day in days:
            for channel in channels:
                found = await self.redis.zrevrange(
                    self.key(day, "not_understood", channel), 0, top * 5, withscores=True
                )
                for member, score in found:
                    text = _text(member)
                    totals[text] = totals.get(text, 0) + int(score)
                    places.setdefault(text, []).append((day, channel))
        ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))[:top]
        result = []
        for text, count in ranked:
            conversations: List[str] = []
            suggestions: Dict[str, int] = {}
            for day, channel in places[text]:
                for member in await self.redis.smembers(self.key(day, "nu", channel, digest(text))):
                    cid = _text(member)
                    if cid not in conversations and len(conversations) < MAX_LINKS:
                        conversations.append(cid)
                found = await self.redis.hget(self.key(day, "suggested", channel), digest(text))
                if found:
                    suggestions[_text(found)] = suggestions.get(_text(found), 0) + 1
            ranked_intents = sorted(suggestions, key=lambda name: (-suggestions[name], name))
            suggested = ranked_intents[0] if ranked_intents else "other"
            result.append(NotUnderstood(text, count, tuple(sorted(conversations)), suggested))
        return result


async def _pfcount(redis: AnyRedis, keys: Sequence[str]) -> int:
    return int(await redis.pfcount(*keys)) if keys else 0


def _percentile(histogram: Dict[str, int], share: float) -> Optional[float]:
    total = sum(histogram.values())
    if not total:
        return None
    seen = 0
    for bound in REPLY_BUCKETS:
        name = "inf" if bound == float("inf") else f"{bound:g}"
        seen += histogram.get(name, 0)
        if seen >= share * total:
            return bound
    return REPLY_BUCKETS[-1]


def _summary(counts: Dict[str, int], active: int, handed: int) -> Dict[str, Any]:
    turns = counts.get("turns", 0)
    fallbacks = counts.get("fallbacks", 0)
    replies = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("reply:")}
    preceded = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("handoff_after:")}
    calls = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("call:")}
    ended = {k.split(":", 1)[1]: v for k, v in counts.items() if k.startswith("handoff_ended:")}
    handed = min(handed, active)

    def percentile(share: float) -> Optional[float]:
        found = _percentile(replies, share)
        return None if found is None or found == float("inf") else found

    return {
        "conversations": active,
        "turns": turns,
        "handed_off": handed,
        "contained": active - handed,
        "containment_rate": round((active - handed) / active, 4) if active else None,
        "handoff_rate": round(handed / active, 4) if active else None,
        "handoffs": counts.get("handoffs", 0),
        "handoff_preceded_by": dict(sorted(preceded.items(), key=lambda kv: -kv[1])),
        "handoffs_unavailable": counts.get("handoff_unavailable", 0),
        "handoff_endings": dict(sorted(ended.items(), key=lambda kv: -kv[1])),
        "agent_replies": counts.get("agent_replies", 0),
        "fallbacks": fallbacks,
        "fallback_rate": round(fallbacks / turns, 4) if turns else None,
        "barge_ins": counts.get("barge_ins", 0),
        "call_outcomes": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
        "reply_seconds": {
            "p50": percentile(0.5),
            "p90": percentile(0.9),
            "p99": percentile(0.99),
            "histogram": replies,
        },
    }
