"""Who is talking: channel addresses, the conversation they belong to, and its contact profile.

Every connector turns its caller into an :class:`Address` (``tel:+E164``, ``user:<id>``,
``anon:<id>``) and asks :class:`IdentityStore` for the conversation id, the Rasa ``sender_id``.
The id is opaque (``c_`` + random), so trackers, lock keys, logs and Rasa's HTTP API never carry a
phone number. First contact is one Lua script, so a call and an SMS from a new number arriving on
two replicas at the same moment end in one conversation.

Redis layout (standalone Redis; the scripts touch the global index and one conversation's keys
together, so Redis Cluster would need the index under a hash tag of its own):

- ``omni:addr:<sha256 hex of "tel:+1…">`` → conversation id, no TTL: a customer who comes back
  after months finds their conversation. The key holds a hash rather than the address so key
  names (``SCAN`` output, ``MONITOR``, slow log, key-space dashboards) carry no phone numbers or
  user ids. It is not meant as protection from someone who can read Redis: the profile holds the
  number as a value.
- ``omni:{<cid>}:profile`` hash: ``created_at``, ``phone``, ``user_id``, ``seen:<channel>``,
  ``sms_opted_out``, ``sms_opted_out_at``, ``extra:<key>``. No TTL either, so the index never
  points at a vanished profile.
- ``omni:{<cid>}:addresses`` set of the index keys mapped to the conversation (for ``forget``).
- ``omni:{<cid>}:sms_failures`` list of the last ``SMS_FAILURES_KEPT`` delivery failures (JSON).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import phonenumbers
import redis.asyncio as aioredis

from omnichannel.redis_client import (
    REDIS_FAILURES,
    LuaScript,
    StateUnavailable,
    conversation_key,
    global_key,
    redis_client,
)
from omnichannel.settings import load_settings

logger = logging.getLogger(__name__)

SCHEMES = ("tel", "user", "anon")
USER_ID_MAX_LENGTH = 128
ANON_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")
E164_PATTERN = re.compile(r"\+[1-9]\d{6,14}")
# Longer input is not a phone number, and phonenumbers' own parsing cost grows with it.
PHONE_INPUT_MAX_LENGTH = 64
PHONE_PREFIXES = ("whatsapp:", "tel:")
CHANNEL_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
EXTRA_KEY_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")
EXTRA_VALUE_MAX_LENGTH = 1024
SMS_FAILURES_KEPT = 20

# 7 or more digits, optionally led by "+", with the separators people write between groups.
# Not glued to other word characters, so message SIDs and other hex ids stay intact; dates, long
# integers and over-long "numbers" are masked too: in logs, masking too much is the safer mistake.
_PHONE_LIKE = re.compile(r"(?<![\w+])\+?\d(?:[\s().\-]{0,3}\d){6,}(?!\w)")


class InvalidAddress(ValueError):
    """A channel address that cannot identify anyone (bad phone number, empty user id, …).

    The message is safe to log and to return in a 4xx: phone numbers in it are masked.
    """


class UnknownConversation(LookupError):
    """An address was to be linked to a conversation that identity has never created."""


def _mask_digits(match: re.Match) -> str:
    text = match.group(0)
    digits = re.sub(r"\D", "", text)
    tail = 4 if len(digits) >= 10 else 2
    head = max(0, min(4, len(digits) - tail - 3))
    plus = "+" if text.startswith("+") else ""
    return f"{plus}{digits[:head]}***{digits[-tail:]}"


def mask(text: str) -> str:
    """``text`` with every phone-number-like digit run reduced to its first and last digits,
    so log lines and error messages can quote payloads without quoting customers' numbers."""
    return _PHONE_LIKE.sub(_mask_digits, text)


def _mask_identifier(value: str, shown: int) -> str:
    return value[: min(shown, len(value) // 2)] + "***"


def _check_user_id(user_id: str) -> None:
    if not isinstance(user_id, str) or not user_id.strip():
        raise InvalidAddress("user id must be a non-empty string")
    if len(user_id) > USER_ID_MAX_LENGTH:
        raise InvalidAddress(f"user id is longer than {USER_ID_MAX_LENGTH} characters")
    if not user_id.isprintable() or user_id != user_id.strip():
        raise InvalidAddress(
            "user id must be printable, without control characters or surrounding spaces"
        )


@dataclass(frozen=True)
class Address:
    """One way to reach a customer, in canonical form.

    Constructing one checks the canonical shape only; build them with :func:`phone_address`,
    :func:`user_address`, :func:`anon_address` or :func:`parse_address`, which also normalise.
    """

    scheme: str
    value: str

    def __post_init__(self) -> None:
        if self.scheme == "tel":
            if not isinstance(self.value, str) or not E164_PATTERN.fullmatch(self.value):
                raise InvalidAddress(
                    f"tel address must be E.164 (+ and 7-15 digits), got {mask(str(self.value))!r}"
                )
        elif self.scheme == "user":
            _check_user_id(self.value)
        elif self.scheme == "anon":
            if not isinstance(self.value, str) or not ANON_ID_PATTERN.fullmatch(self.value):
                raise InvalidAddress(
                    "anon id must be 16-128 URL-safe characters (A-Z a-z 0-9 _ -), "
                    "so that it cannot be guessed"
                )
        else:
            raise InvalidAddress(f"address scheme must be one of {', '.join(SCHEMES)}")

    def __str__(self) -> str:
        return f"{self.scheme}:{self.value}"

    def masked(self) -> str:
        """The address as logs may show it."""
        if self.scheme == "tel":
            return f"tel:{mask(self.value)}"
        shown = 2 if self.scheme == "user" else 4
        return f"{self.scheme}:{_mask_identifier(self.value, shown)}"

    @property
    def index_key(self) -> str:
        """Redis key of this address's conversation mapping (hashed: no PII in key names)."""
        return global_key("addr", hashlib.sha256(str(self).encode("utf-8")).hexdigest())


def phone_address(raw: str, default_region: Optional[str] = None) -> Address:
    """``tel:`` address of a phone number as a caller, Twilio or a user typed it.

    Accepts E.164, ``whatsapp:+…`` and ``tel:+…`` forms, and national formats read in
    ``default_region`` (``DEFAULT_PHONE_REGION`` when None). Numbers that cannot exist
    (``phonenumbers.is_valid_number``) are rejected, so typos and garbage never become a
    conversation.
    """
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidAddress("phone number is empty")
    text = raw.strip()
    if len(text) > PHONE_INPUT_MAX_LENGTH:
        raise InvalidAddress(f"phone number is longer than {PHONE_INPUT_MAX_LENGTH} characters")
    for prefix in PHONE_PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :].strip()
            break
    region = (default_region or load_settings().default_phone_region).upper()
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as error:
        raise InvalidAddress(f"not a phone number: {mask(text)!r} ({mask(str(error))})") from None
    if not phonenumbers.is_possible_number(number) or not phonenumbers.is_valid_number(number):
        raise InvalidAddress(f"not a valid phone number: {mask(text)!r} (region {region})")
    return Address("tel", phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def user_address(user_id: str) -> Address:
    """``user:`` address of a host-site account (the web chat token's subject)."""
    return Address("user", user_id)


def anon_address(anon_id: str) -> Address:
    """``anon:`` address of an anonymous web chat visitor."""
    return Address("anon", anon_id)


def parse_address(text: str) -> Address:
    """An address from its string form (``str(address)``), normalising ``tel:`` numbers again."""
    if not isinstance(text, str) or ":" not in text:
        raise InvalidAddress("address must look like tel:+…, user:… or anon:…")
    scheme, _, value = text.partition(":")
    if scheme == "tel":
        return phone_address(value)
    if scheme == "user":
        return user_address(value)
    if scheme == "anon":
        return anon_address(value)
    raise InvalidAddress(f"address scheme must be one of {', '.join(SCHEMES)}")


@dataclass
class ContactProfile:
    """What the assistant knows about how to reach one conversation's customer."""

    conversation_id: str
    phone: Optional[str] = None
    user_id: Optional[str] = None
    channels: Dict[str, float] = field(default_factory=dict)
    sms_opted_out: bool = False
    sms_opted_out_at: Optional[float] = None
    sms_failures: List[dict] = field(default_factory=list)
    extra: Dict[str, str] = field(default_factory=dict)


# Maps KEYS (address index keys) to one conversation. Existing mappings win, in KEYS order; an
# address mapped elsewhere is left where it is. Profile fields come only from addresses that end
# up mapped to the result.
# ARGV: mode ("resolve" | "link"), candidate id (resolve: fresh id; link: the target),
# profile key prefix, profile key suffix, addresses key suffix, now, channel ("" for none),
# then scheme and value of each KEYS entry.
# Returns {conversation id, 1 if created}; link mode returns the address's owner, or false when
# the target conversation does not exist.
_MAP_ADDRESSES = LuaScript(
    """
local mode, candidate = ARGV[1], ARGV[2]
local prefix, profile_suffix, addresses_suffix = ARGV[3], ARGV[4], ARGV[5]
local now, channel = ARGV[6], ARGV[7]
local cid = false
if mode == 'link' then
  if redis.call('EXISTS', prefix .. candidate .. profile_suffix) == 0 then return false end
  cid = candidate
else
  for i = 1, #KEYS do
    cid = redis.call('GET', KEYS[i])
    if cid then break end
  end
end
local created = 0
if not cid then
  cid = candidate
  created = 1
end
local profile = prefix .. cid .. profile_suffix
local addresses = prefix .. cid .. addresses_suffix
redis.call('HSETNX', profile, 'created_at', now)
local first_owner = false
for i = 1, #KEYS do
  local owner = cid
  if not redis.call('SET', KEYS[i], cid, 'NX') then owner = redis.call('GET', KEYS[i]) end
  if i == 1 then first_owner = owner end
  if owner == cid then
    redis.call('SADD', addresses, KEYS[i])
    local scheme, value = ARGV[6 + 2 * i], ARGV[7 + 2 * i]
    if scheme == 'tel' then redis.call('HSETNX', profile, 'phone', value) end
    if scheme == 'user' then redis.call('HSETNX', profile, 'user_id', value) end
  end
end
if channel ~= '' then redis.call('HSET', profile, 'seen:' .. channel, now) end
if mode == 'link' then return {first_owner, 0} end
return {cid, created}
"""
)

# Removes a conversation's profile and the index entries that still point at it.
# KEYS: profile, addresses set, sms failures list. ARGV: conversation id.
_FORGET = LuaScript(
    """
for _, index_key in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('GET', index_key) == ARGV[1] then redis.call('DEL', index_key) end
end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
"""
)

_CID_MARK = "\x00cid\x00"


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


class IdentityStore:
    """Address → conversation index and contact profiles, in Redis.

    Without an explicit client it takes ``redis_client()`` on every call, so one store object
    can serve the Rasa server's loop, the action server's loop and tests alike.
    """

    def __init__(self, redis: Optional[aioredis.Redis] = None) -> None:
        self._redis = redis
        self._profile_prefix, self._profile_suffix = conversation_key(_CID_MARK, "profile").split(
            _CID_MARK
        )
        self._addresses_suffix = conversation_key(_CID_MARK, "addresses").split(_CID_MARK)[1]

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis if self._redis is not None else redis_client()

    async def _map_addresses(
        self, mode: str, candidate: str, addresses: Sequence[Address], channel: Optional[str]
    ) -> object:
        for address in addresses:
            if not isinstance(address, Address):
                raise TypeError(f"expected an Address, got {type(address).__name__}")
        if channel is not None:
            _check_channel(channel)
        args: List[str] = [
            mode,
            candidate,
            self._profile_prefix,
            self._profile_suffix,
            self._addresses_suffix,
            repr(time.time()),
            channel or "",
        ]
        for address in addresses:
            args += [address.scheme, address.value]
        return await _MAP_ADDRESSES(self.redis, [address.index_key for address in addresses], args)

    async def resolve_conversation(
        self,
        address: Address,
        *,
        channel: Optional[str] = None,
        link_to: Sequence[Address] = (),
    ) -> str:
        """The conversation of ``address``, created on first contact, in one atomic step.

        ``address``'s own conversation wins; else the first mapped ``link_to`` address's (a web
        chat user with a verified phone joins the phone's conversation); else a new one. Every
        unmapped address among them is then mapped to it; mapped ones are never moved, so one
        customer's history is never split or hijacked by a later claim.
        """
        addresses = [address, *link_to]
        with _state_errors("resolve"):
            cid_raw, created = await self._map_addresses(
                "resolve", new_conversation_id(), addresses, channel
            )
        cid = _text(cid_raw)
        if created:
            logger.info("new conversation %s for %s", cid, address.masked())
        return cid

    async def lookup(self, address: Address) -> Optional[str]:
        """The conversation ``address`` is mapped to, or None; never creates one."""
        with _state_errors("lookup"):
            value = await self.redis.get(address.index_key)
        return _text(value) if value is not None else None

    async def link(self, address: Address, conversation_id: str) -> str:
        """Map an unmapped ``address`` to an existing conversation; returns the conversation the
        address belongs to afterwards (its earlier one, if it was already mapped)."""
        with _state_errors("link"):
            result = await self._map_addresses("link", conversation_id, [address], None)
        if not result:
            raise UnknownConversation(f"conversation {conversation_id!r} does not exist")
        owner = _text(result[0])
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
        async with self._transaction("profile") as pipe:
            pipe.hgetall(self._profile_key(conversation_id))
            pipe.lrange(self._failures_key(conversation_id), 0, -1)
            fields_raw, failures_raw = await pipe.execute()
        fields = {_text(key): _text(value) for key, value in fields_raw.items()}
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
        with _state_errors("record_channel"):
            await self.redis.hset(
                self._profile_key(conversation_id), f"seen:{channel}", repr(time.time())
            )

    async def set_sms_opt_out(self, conversation_id: str, opted_out: bool) -> None:
        """Record STOP (True) or START (False); opting back in clears the opt-out time."""
        key = self._profile_key(conversation_id)
        async with self._transaction("set_sms_opt_out") as pipe:
            if opted_out:
                pipe.hset(
                    key, mapping={"sms_opted_out": "1", "sms_opted_out_at": repr(time.time())}
                )
            else:
                pipe.hset(key, "sms_opted_out", "0")
                pipe.hdel(key, "sms_opted_out_at")
            await pipe.execute()

    async def record_sms_failure(
        self, conversation_id: str, *, sid: str, status: str, error_code: Optional[str]
    ) -> None:
        """Remember a failed SMS delivery; only the last ``SMS_FAILURES_KEPT`` are kept."""
        entry = {"sid": sid, "status": status, "error_code": error_code, "at": time.time()}
        key = self._failures_key(conversation_id)
        async with self._transaction("record_sms_failure") as pipe:
            pipe.rpush(key, json.dumps(entry))
            pipe.ltrim(key, -SMS_FAILURES_KEPT, -1)
            await pipe.execute()

    async def set_extra(self, conversation_id: str, key: str, value: str) -> None:
        """Set a small free-form profile field (e.g. a preferred language)."""
        if not isinstance(key, str) or not EXTRA_KEY_PATTERN.fullmatch(key):
            raise ValueError(f"extra key must match {EXTRA_KEY_PATTERN.pattern}, got {key!r}")
        if not isinstance(value, str) or len(value) > EXTRA_VALUE_MAX_LENGTH:
            raise ValueError(f"extra value must be a string of at most {EXTRA_VALUE_MAX_LENGTH}")
        with _state_errors("set_extra"):
            await self.redis.hset(self._profile_key(conversation_id), f"extra:{key}", value)

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
        keys = [
            self._profile_key(conversation_id),
            conversation_key(conversation_id, "addresses"),
            self._failures_key(conversation_id),
        ]
        with _state_errors("forget"):
            await _FORGET(self.redis, keys, [conversation_id])

    @contextlib.asynccontextmanager
    async def _transaction(self, operation: str):
        with _state_errors(operation):
            async with self.redis.pipeline(transaction=True) as pipe:
                yield pipe

    @staticmethod
    def _profile_key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "profile")

    @staticmethod
    def _failures_key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "sms_failures")
