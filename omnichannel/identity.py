"""Who is talking: the conversation a channel address belongs to, and its contact profile.

Every connector turns its caller into an :class:`~omnichannel.addresses.Address` (``tel:+E164``,
``user:<id>``, ``anon:<id>``) and asks :class:`IdentityStore` for the conversation id, the Rasa
``sender_id``.
The id is opaque (``c_`` + random), so trackers, lock keys, logs and Rasa's HTTP API never carry a
phone number. First contact is one Lua script, so a call and an SMS from a new number arriving on
two replicas at the same moment end in one conversation.

Redis layout. Each address's record has a hash tag of its own and each conversation's keys
share the conversation's, so on Redis Cluster every script touches one slot; the protocol
between the two (below) keeps first contact, linking and forgetting race-free without a
cross-slot transaction:

- ``omni:{a_<sha256 hex of "tel:+1…">}:conversation`` → conversation id. The key holds a hash
  rather than the address so key names (``SCAN`` output, ``MONITOR``, slow log, key-space
  dashboards) carry no phone numbers or user ids. It is not meant as protection from someone who
  can read Redis: the profile holds the number as a value.
- ``omni:{<cid>}:profile`` hash: ``created_at``, ``phone``, ``user_id``, ``seen:<channel>``,
  ``sms_opted_out``, ``sms_opted_out_at``, ``extra:<key>``.
- ``omni:{<cid>}:addresses`` set of the address record keys mapped to the conversation.
- ``omni:{<cid>}:sms_failures`` list of the last ``SMS_FAILURES_KEPT`` delivery failures (JSON).
- ``omni:{<cid>}:forgotten`` tombstone of an erased conversation.

Every key expires after a period without contact: ``KNOWN_TTL`` for conversations with a phone
number or a site user, ``ANONYMOUS_TTL`` for anonymous web chat visitors, so a bot that opens
sessions by the thousand leaves nothing behind. Each contact renews them.

The protocol: an address is claimed with ``SET NX`` on its own record, before anything is
written under the conversation, so of two replicas racing on a new number one wins and the
other adopts the winner's id, and a losing id leaves no key. A web user who brings a verified
phone number claims the phone's record first and then their own with whatever the phone's
record holds, so a login racing the phone's first SMS still ends in one conversation. Erasure
writes the tombstone first; a contact that finds it releases the stale record and starts over.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from omnichannel.addresses import KNOWN_TTL_SECONDS, Address, phone_address
from omnichannel.masking import mask
from omnichannel.redis_client import (
    REDIS_FAILURES,
    LuaScript,
    RedisBacked,
    StateUnavailable,
    conversation_key,
)

logger = logging.getLogger(__name__)

CHANNEL_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
EXTRA_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
EXTRA_VALUE_MAX_LENGTH = 1024
SMS_FAILURES_KEPT = 20

class UnknownConversation(LookupError):
    """An address was to be linked to a conversation that identity has never created."""


@dataclass
class ContactProfile:
    """What the assistant knows about how to reach one conversation's customer."""

    conversation_id: str
    phone: Optional[str] = None
    user_id: Optional[str] = None
    channels: Dict[str, float] = field(default_factory=dict)
    sms_opted_out: bool = False
    sms_opted_out_at: Optional[float] = None
    sms_failures: List[Dict[str, Any]] = field(default_factory=list)
    extra: Dict[str, str] = field(default_factory=dict)


#: How often a contact starts over after finding its address pointing at an erased conversation.
_MAX_RESOLVE_ATTEMPTS = 3

# Claims one address record (own slot). KEYS: the record. ARGV: candidate id, ttl ms.
# Returns {owner, 1 if this call set it}. The record's expiry is renewed either way.
_CLAIM = LuaScript(
    """
local owner = redis.call('GET', KEYS[1])
if owner then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {owner, 0}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {ARGV[1], 1}
"""
)

# Deletes an address record if it still names the given conversation. KEYS: record. ARGV: cid.
_RELEASE = LuaScript(
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
)

# Renews a key's expiry to at least ttl ms (never shortens it); gives one that has none, one.
_LUA_RENEW = """
local function renew(key, ttl)
  local left = redis.call('PTTL', key)
  if left == -1 or (left >= 0 and left < ttl) then redis.call('PEXPIRE', key, ttl) end
end
"""

# Records the addresses a conversation owns in its profile (conversation slot).
# KEYS: profile, addresses set, sms failures, tombstone.
# ARGV: now, channel ('' for none), ttl ms, then (record key, scheme, value) per owned address.
# Returns 0 if the conversation was erased (the tombstone exists), else 1.
_ATTACH = LuaScript(
    _LUA_RENEW
    + """
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local profile, addresses, ttl = KEYS[1], KEYS[2], tonumber(ARGV[3])
redis.call('HSETNX', profile, 'created_at', ARGV[1])
for i = 4, #ARGV, 3 do
  redis.call('SADD', addresses, ARGV[i])
  if ARGV[i + 1] == 'tel' then redis.call('HSETNX', profile, 'phone', ARGV[i + 2]) end
  if ARGV[i + 1] == 'user' then redis.call('HSETNX', profile, 'user_id', ARGV[i + 2]) end
end
if ARGV[2] ~= '' then redis.call('HSET', profile, 'seen:' .. ARGV[2], ARGV[1]) end
renew(profile, ttl)
if redis.call('EXISTS', addresses) == 1 then renew(addresses, ttl) end
if redis.call('EXISTS', KEYS[3]) == 1 then renew(KEYS[3], ttl) end
return 1
"""
)

# Whether a conversation can take a new address. KEYS: profile, tombstone.
_EXISTS = LuaScript(
    """
return redis.call('EXISTS', KEYS[1]) == 1 and redis.call('EXISTS', KEYS[2]) == 0
"""
)

# Sets and deletes profile fields. KEYS: profile. ARGV: ttl ms for a profile without one,
# number of fields to set n, n field/value pairs, then fields to delete.
_WRITE_PROFILE = LuaScript(
    _LUA_RENEW
    + """
local n = tonumber(ARGV[2])
for i = 3, 2 + 2 * n, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
for i = 3 + 2 * n, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""
)

# Appends a delivery failure, keeping the last ARGV[3]. KEYS: failures, profile.
# ARGV: entry, ttl ms for a conversation without a profile, how many to keep.
_PUSH_FAILURE = LuaScript(
    """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
local ttl = redis.call('PTTL', KEYS[2])
if ttl < 0 then ttl = tonumber(ARGV[2]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""
)

# KEYS: profile, sms failures. Returns {profile fields as a flat list, failures}.
_READ_PROFILE = LuaScript(
    """
return {redis.call('HGETALL', KEYS[1]), redis.call('LRANGE', KEYS[2], 0, -1)}
"""
)

# Erases a conversation's contact data, leaving a tombstone; returns the address records that
# were mapped to it, for the caller to release one slot at a time.
# KEYS: profile, addresses set, sms failures, tombstone. ARGV: tombstone ttl ms.
_FORGET = LuaScript(
    """
redis.call('SET', KEYS[4], '1', 'PX', ARGV[1])
local records = redis.call('SMEMBERS', KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return records
"""
)


def new_conversation_id() -> str:
    """An opaque, unguessable conversation id: ``c_`` + 22 URL-safe characters (128 bits)."""
    return "c_" + secrets.token_urlsafe(16)


def _text(value: bytes | str) -> str:
    """Redis replies as text, whether or not the injected client decodes responses."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _check_channel(channel: str) -> None:
    if not isinstance(channel, str) or not CHANNEL_PATTERN.fullmatch(channel):
        raise ValueError(f"channel name must match {CHANNEL_PATTERN.pattern}, got {channel!r}")


@contextlib.contextmanager
def _state_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except REDIS_FAILURES as error:
        raise StateUnavailable(
            f"identity {operation}: Redis unavailable ({type(error).__name__}: {mask(str(error))})"
        ) from error


class IdentityStore(RedisBacked):
    """Address → conversation index and contact profiles, in Redis (protocol: module docstring).

    Without an explicit client it takes ``redis_client()`` on every call, so one store object
    can serve the Rasa server's loop, the action server's loop and tests alike.
    """

    async def resolve_conversation(
        self,
        address: Address,
        *,
        channel: Optional[str] = None,
        link_to: Sequence[Address] = (),
    ) -> str:
        """The conversation of ``address``, created on first contact.

        ``address``'s own conversation wins; else the first mapped ``link_to`` address's (a web
        chat user with a verified phone joins the phone's conversation); else a new one. Every
        unmapped address among them is then mapped to it; mapped ones are never moved, so one
        customer's history is never split or hijacked by a later claim.
        """
        addresses = [address, *link_to]
        _check_addresses(addresses)
        if channel is not None:
            _check_channel(channel)
        with _state_errors("resolve"):
            for _ in range(_MAX_RESOLVE_ATTEMPTS):
                cid, created, owned = await self._claim_all(address, list(link_to))
                if await self._attach(cid, owned, channel):
                    if created:
                        logger.info("new conversation %s for %s", cid, address.masked())
                    return cid
                await self._release(cid, owned)
        raise StateUnavailable(f"identity resolve: {address.masked()} kept meeting erased data")

    async def _claim_all(
        self, address: Address, link_to: List[Address]
    ) -> Tuple[str, bool, List[Address]]:
        """Claims ``address`` and then ``link_to`` (phone first, see the module docstring);
        returns the conversation, whether this call created it, and the addresses it owns."""
        owner = await self._peek(address)
        created = False
        if owner is None:
            candidate = None
            for linked in link_to:
                candidate = await self._peek(linked)
                if candidate is not None:
                    break
            fresh = new_conversation_id()
            if candidate is None:
                candidate = (await self._claim(link_to[0], fresh))[0] if link_to else fresh
            owner, _ = await self._claim(address, candidate)
            created = owner == fresh
        owned = [address]
        for linked in link_to:
            linked_owner, _ = await self._claim(linked, owner)
            if linked_owner == owner:
                owned.append(linked)
        return owner, created, owned

    async def _peek(self, address: Address) -> Optional[str]:
        value = await self.redis.get(address.record_key)
        return _text(value) if value is not None else None

    async def _claim(self, address: Address, candidate: str) -> Tuple[str, bool]:
        owner, claimed = await _CLAIM(
            self.redis, [address.record_key], [candidate, address.ttl_seconds * 1000]
        )
        return _text(owner), bool(claimed)

    async def _attach(self, cid: str, owned: Sequence[Address], channel: Optional[str]) -> bool:
        args: List[Any] = [repr(time.time()), channel or "", _ttl_ms(owned)]
        for address in owned:
            args += [address.record_key, address.scheme, address.value]
        return bool(await _ATTACH(self.redis, self._keys(cid), args))

    async def _release(self, cid: str, addresses: Sequence[Address]) -> None:
        for address in addresses:
            await _RELEASE(self.redis, [address.record_key], [cid])

    async def lookup(self, address: Address) -> Optional[str]:
        """The conversation ``address`` is mapped to, or None; never creates one."""
        _check_addresses([address])
        with _state_errors("lookup"):
            return await self._peek(address)

    async def link(self, address: Address, conversation_id: str) -> str:
        """Map an unmapped ``address`` to an existing conversation; returns the conversation the
        address belongs to afterwards (its earlier one, if it was already mapped)."""
        _check_addresses([address])
        keys = self._keys(conversation_id)
        with _state_errors("link"):
            if not await _EXISTS(self.redis, [keys[0], keys[3]]):
                raise UnknownConversation(f"conversation {conversation_id!r} does not exist")
            owner, _ = await self._claim(address, conversation_id)
            if owner == conversation_id and not await self._attach(owner, [address], None):
                await self._release(owner, [address])
                raise UnknownConversation(f"conversation {conversation_id!r} was erased")
        if owner != conversation_id:
            logger.info(
                "%s stays in conversation %s, not linked to %s",
                address.masked(),
                owner,
                conversation_id,
            )
        return owner

    async def profile(self, conversation_id: str) -> ContactProfile:
        """The contact profile; an empty one for a conversation identity never saw (e.g. a
        ``rasa shell`` session), since there is then simply nothing known about the contact."""
        with _state_errors("profile"):
            flat, failures_raw = await _READ_PROFILE(
                self.redis,
                [self._profile_key(conversation_id), self._failures_key(conversation_id)],
            )
        fields = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
        profile = ContactProfile(
            conversation_id=conversation_id,
            phone=fields.get("phone"),
            user_id=fields.get("user_id"),
            sms_opted_out=fields.get("sms_opted_out") == "1",
            sms_opted_out_at=(
                float(fields["sms_opted_out_at"]) if "sms_opted_out_at" in fields else None
            ),
            sms_failures=[json.loads(item) for item in failures_raw],
        )
        for name, value in fields.items():
            kind, _, rest = name.partition(":")
            if kind == "seen":
                profile.channels[rest] = float(value)
            elif kind == "extra":
                profile.extra[rest] = value
        return profile

    async def record_channel(self, conversation_id: str, channel: str) -> None:
        """Note that the customer was just seen on ``channel``."""
        _check_channel(channel)
        await self._write_profile(
            "record_channel", conversation_id, {f"seen:{channel}": repr(time.time())}
        )

    async def set_sms_opt_out(self, conversation_id: str, opted_out: bool) -> None:
        """Record STOP (True) or START (False); opting back in clears the opt-out time."""
        if opted_out:
            fields = {"sms_opted_out": "1", "sms_opted_out_at": repr(time.time())}
            await self._write_profile("set_sms_opt_out", conversation_id, fields)
        else:
            await self._write_profile(
                "set_sms_opt_out", conversation_id, {"sms_opted_out": "0"}, ["sms_opted_out_at"]
            )

    async def record_sms_failure(
        self, conversation_id: str, *, sid: str, status: str, error_code: Optional[str]
    ) -> None:
        """Remember a failed SMS delivery; only the last ``SMS_FAILURES_KEPT`` are kept."""
        entry = {"sid": sid, "status": status, "error_code": error_code, "at": time.time()}
        keys = [self._failures_key(conversation_id), self._profile_key(conversation_id)]
        with _state_errors("record_sms_failure"):
            await _PUSH_FAILURE(
                self.redis, keys, [json.dumps(entry), KNOWN_TTL_SECONDS * 1000, SMS_FAILURES_KEPT]
            )

    async def set_extra(self, conversation_id: str, key: str, value: str) -> None:
        """Set a small free-form profile field (e.g. a preferred language)."""
        if not isinstance(key, str) or not EXTRA_KEY_PATTERN.fullmatch(key):
            raise ValueError(f"extra key must match {EXTRA_KEY_PATTERN.pattern}, got {key!r}")
        if not isinstance(value, str) or len(value) > EXTRA_VALUE_MAX_LENGTH:
            raise ValueError(f"extra value must be a string of at most {EXTRA_VALUE_MAX_LENGTH}")
        await self._write_profile("set_extra", conversation_id, {f"extra:{key}": value})

    async def conversation_for_phone(self, raw_phone: str) -> Optional[str]:
        """The conversation of a phone number in any accepted format, or None.

        Raises InvalidAddress for a number that cannot exist.
        """
        return await self.lookup(phone_address(raw_phone))

    async def forget(self, conversation_id: str) -> None:
        """Erase a conversation's contact data and its address mappings (right to erasure).

        The next contact from any of its addresses starts a new conversation. The tracker's
        events are the tracker store's to delete.
        """
        with _state_errors("forget"):
            records = await _FORGET(
                self.redis, self._keys(conversation_id), [KNOWN_TTL_SECONDS * 1000]
            )
            for record in records:
                await _RELEASE(self.redis, [_text(record)], [conversation_id])

    async def _write_profile(
        self,
        operation: str,
        conversation_id: str,
        fields: Dict[str, str],
        deleted: Sequence[str] = (),
    ) -> None:
        args: List[Any] = [KNOWN_TTL_SECONDS * 1000, len(fields)]
        for name, value in fields.items():
            args += [name, value]
        args += list(deleted)
        with _state_errors(operation):
            await _WRITE_PROFILE(self.redis, [self._profile_key(conversation_id)], args)

    @classmethod
    def _keys(cls, conversation_id: str) -> List[str]:
        """The conversation-slot keys the scripts take: profile, addresses, failures, tombstone."""
        return [
            cls._profile_key(conversation_id),
            conversation_key(conversation_id, "addresses"),
            cls._failures_key(conversation_id),
            conversation_key(conversation_id, "forgotten"),
        ]

    @staticmethod
    def _profile_key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "profile")

    @staticmethod
    def _failures_key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "sms_failures")


def _check_addresses(addresses: Sequence[Address]) -> None:
    for address in addresses:
        if not isinstance(address, Address):
            raise TypeError(f"expected an Address, got {type(address).__name__}")


def _ttl_ms(addresses: Sequence[Address]) -> int:
    """A conversation's records last as long as its longest-lived address's."""
    return max(address.ttl_seconds for address in addresses) * 1000
