"""The facts the outbound decision needs, read from Redis, and the decision itself: the one call
both notifications and callbacks ask "may we send this to this customer now, and if not, why or
when" (:meth:`OutboundGate.decide`).

Consent is the address's (:mod:`omnichannel.outbound.consent`) together with the contact
profile's SMS opt-out (set by the Twilio connector on STOP); "contacted by phone" means the
profile has seen the customer on a phone channel (a call, an SMS, a WhatsApp message); the
conversation's own time zone is the profile's ``extra:timezone`` when a channel recorded one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional

from omnichannel.addresses import Address, user_address
from omnichannel.channels import CHAT
from omnichannel.identity import ContactProfile, IdentityStore
from omnichannel.outbound.consent import Consent, ConsentStore
from omnichannel.outbound.limits import RateLimiter
from omnichannel.outbound.policy import (
    PHONE_CHANNELS,
    Decision,
    Facts,
    OutboundPolicy,
    decide,
    zones_of_phone,
)

#: The contact profile's extra field holding the conversation's IANA time zone.
TIMEZONE_FIELD = "timezone"


@dataclass(frozen=True)
class OutboundRequest:
    """One item to decide on: to whom (``conversation_id``), what (``kind``), on which
    ``channel`` (voice, sms, whatsapp, chat), whether the customer asked for it just now
    (``customer_requested``) and whether the business sent its record of the customer's
    consent (``consent_record``)."""

    conversation_id: str
    kind: str
    channel: str
    customer_requested: bool = False
    consent_record: bool = False


def contacted_by_phone(profile: ContactProfile) -> bool:
    return any(channel in profile.channels for channel in PHONE_CHANNELS)


class OutboundGate:
    """Gathers :class:`~omnichannel.outbound.policy.Facts` and applies
    :func:`~omnichannel.outbound.policy.decide`. ``clock`` gives epoch seconds (tests pass a
    controllable one)."""

    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        identity: Optional[IdentityStore] = None,
        consent: Optional[ConsentStore] = None,
        limiter: Optional[RateLimiter] = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy = policy
        self.identity = identity or IdentityStore()
        self.consent = consent or ConsentStore(self.identity.given)
        self.limiter = limiter or RateLimiter(policy.limits, self.identity.given)
        self.clock = clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), timezone.utc)

    @staticmethod
    def address_of(profile: ContactProfile, channel: str) -> Optional[Address]:
        """The address an item on ``channel`` goes to (whose consent counts)."""
        if channel in PHONE_CHANNELS:
            return Address("tel", profile.phone) if profile.phone else None
        if channel == CHAT and profile.user_id:
            return user_address(profile.user_id)
        return None

    async def facts(self, request: OutboundRequest) -> Facts:
        profile = await self.identity.profile(request.conversation_id)
        address = self.address_of(profile, request.channel)
        consent = await self.consent.current(address) if address is not None else Consent()
        counts = await self.limiter.counts(request.conversation_id, self.clock())
        phone = request.channel in PHONE_CHANNELS
        return Facts(
            channel=request.channel,
            opted_out=consent.opted_out or (phone and profile.sms_opted_out),
            contacted_by_phone=contacted_by_phone(profile),
            consent_record=request.consent_record or consent.granted,
            customer_requested=request.customer_requested,
            has_address=address is not None or not phone,
            conversation_timezone=profile.extra.get(TIMEZONE_FIELD),
            phone_zones=zones_of_phone(profile.phone),
            customer_sent=counts.customer,
            global_sent=counts.global_,
            global_window_ends=datetime.fromtimestamp(counts.global_window_ends, timezone.utc),
        )

    async def decide(self, request: OutboundRequest) -> Decision:
        """May ``request`` go now? Raises a Redis failure (nothing is decided then)."""
        return decide(await self.facts(request), self.policy, self.now())
