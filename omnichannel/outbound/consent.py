"""Consent records per address: what the customer said (STOP, START and the channels'
equivalents) and what the business holds (a consent record sent with a request), each with its
time and source.

A STOP (``opt_out``) blocks every business-initiated item to that address until the customer's
START (``opt_in``); a business consent record (``granted``) never overrides a STOP: only the
customer lifts it. The record lives under the address's own hash tag
(``omni:{a_<digest>}:consent``, a HASH) with its recent history
(``omni:{a_<digest>}:consent:log``, a LIST of the last :data:`HISTORY_KEPT` records, JSON), so a
STOP holds whichever conversation the number is in; both keys expire :data:`CONSENT_TTL_SECONDS`
after the last record (longer than a known conversation is kept: a STOP outlives the
conversation it was sent in).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, List, Optional

from omnichannel.addresses import Address
from omnichannel.identity import IdentityStore
from omnichannel.redis_client import AnyRedis, LuaScript, RedisBacked, conversation_key

#: The customer said STOP (or the channel's equivalent).
OPT_OUT = "opt_out"
#: The customer said START (or the channel's equivalent).
OPT_IN = "opt_in"
#: The business holds a record of the customer's consent (sent with a request).
GRANTED = "granted"
ACTIONS = (OPT_OUT, OPT_IN, GRANTED)

#: Consent records are kept this long after the last one (two years).
CONSENT_TTL_SECONDS = 2 * 366 * 24 * 3600
HISTORY_KEPT = 20
SOURCE_MAX_LENGTH = 64
REFERENCE_MAX_LENGTH = 128

# KEYS: record, log. ARGV: action, at, source, reference, entry json, kept, ttl.
# A customer's own action sets the state; a business grant only sets the grant fields.
_RECORD = LuaScript(
    """
if ARGV[1] == 'granted' then
  redis.call('HSET', KEYS[1], 'granted_at', ARGV[2], 'granted_source', ARGV[3],
    'granted_reference', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'state', ARGV[1], 'at', ARGV[2], 'source', ARGV[3])
end
redis.call('LPUSH', KEYS[2], ARGV[5])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[6]) - 1)
redis.call('EXPIRE', KEYS[1], ARGV[7])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return 1
"""
)


@dataclass(frozen=True)
class ConsentEntry:
    """One record: ``action`` (opt_out, opt_in, granted), when (epoch seconds), its ``source``
    (``sms``, ``whatsapp``, ``voice``, ``chat``, ``business``…) and the business's
    ``reference`` of a grant (its own record id)."""

    action: str
    at: float
    source: str
    reference: str = ""


@dataclass(frozen=True)
class Consent:
    """An address's consent as it stands: the customer's last STOP/START and the business's
    last grant."""

    state: Optional[str] = None
    at: Optional[float] = None
    source: Optional[str] = None
    granted_at: Optional[float] = None
    granted_source: Optional[str] = None

    @property
    def opted_out(self) -> bool:
        return self.state == OPT_OUT

    @property
    def granted(self) -> bool:
        return self.granted_at is not None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class ConsentStore(RedisBacked):
    """Consent records of addresses (see the module's docstring)."""

    def __init__(self, redis: Optional[AnyRedis] = None) -> None:
        super().__init__(redis)

    @staticmethod
    def record_key(address: Address) -> str:
        return conversation_key(address.hash_tag, "consent")

    @staticmethod
    def log_key(address: Address) -> str:
        return conversation_key(address.hash_tag, "consent", "log")

    async def record(
        self,
        address: Address,
        action: str,
        source: str,
        *,
        reference: str = "",
        at: Optional[float] = None,
    ) -> ConsentEntry:
        """Records ``action`` for ``address``; raises ValueError on an unknown action or an
        over-long source/reference, a Redis failure as it is."""
        if action not in ACTIONS:
            raise ValueError(f"consent action must be one of {', '.join(ACTIONS)}")
        if not source or len(source) > SOURCE_MAX_LENGTH:
            raise ValueError(f"consent source must be 1-{SOURCE_MAX_LENGTH} characters")
        if len(reference) > REFERENCE_MAX_LENGTH:
            raise ValueError(f"consent reference must be at most {REFERENCE_MAX_LENGTH} characters")
        entry = ConsentEntry(action, time.time() if at is None else at, source, reference)
        await _RECORD(
            self.redis,
            [self.record_key(address), self.log_key(address)],
            [
                action,
                repr(entry.at),
                source,
                reference,
                json.dumps(asdict(entry)),
                HISTORY_KEPT,
                CONSENT_TTL_SECONDS,
            ],
        )
        return entry

    async def current(self, address: Address) -> Consent:
        raw = await self.redis.hgetall(self.record_key(address))
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return Consent(
            state=fields.get("state"),
            at=float(fields["at"]) if "at" in fields else None,
            source=fields.get("source"),
            granted_at=float(fields["granted_at"]) if "granted_at" in fields else None,
            granted_source=fields.get("granted_source"),
        )

    async def history(self, address: Address) -> List[ConsentEntry]:
        """The last records, newest first."""
        raw = await self.redis.lrange(self.log_key(address), 0, HISTORY_KEPT - 1)
        return [ConsentEntry(**json.loads(_text(item))) for item in raw]


async def record_phone_consent(
    identity: IdentityStore, conversation_id: str, action: str, source: str
) -> None:
    """Records a STOP/START that arrived in ``conversation_id`` (a keyword on SMS or WhatsApp,
    Twilio's report of an unsubscribed number) against the conversation's phone number."""
    profile = await identity.profile(conversation_id)
    if profile.phone:
        await ConsentStore(identity.given).record(Address("tel", profile.phone), action, source)
