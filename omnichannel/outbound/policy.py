"""The outbound decision: may this business-initiated item go to this customer now, and if not,
why, and when it may.

Pure logic (no Redis, no clock of its own): :func:`decide` takes the facts gathered about the
customer (:class:`Facts`, see :mod:`omnichannel.outbound.gate`), the operator's policy
(:class:`OutboundPolicy`) and the time, and answers a :class:`Decision`:

- ``refuse`` with a reason: the address opted out (STOP, until START); a phone channel to a
  number that never contacted the business and no consent record from the business; the
  customer's own rate limit is spent;
- ``hold`` until a time, with a reason: the customer's quiet hours (in their local time), the
  global rate limit's window;
- ``send``.

Quiet hours apply to the channels that reach a phone (SMS, WhatsApp, calls); a message shown in
a chat tab the customer has open, or queued for the next time they open it, disturbs nobody.
The customer's time zone is the conversation's when it knows one (e.g. the browser's), else the
one ``phonenumbers`` gives the number's region; when a number spans several zones (a
non-geographic US number) the window must be open in every one of them, and when that never
happens within a day, or nothing is known, the operator's default zone decides.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from typing import Mapping, Optional, Sequence, Tuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones

from omnichannel.channels import CHAT, SMS, VOICE, WHATSAPP
from omnichannel.errors import ConfigError

#: Item kinds (the ``kind`` label of the outbound metric; each kind registers its delivery).
NOTIFICATION = "notification"
CALLBACK = "callback"

#: Channels that reach a phone: consent by the number, quiet hours.
PHONE_CHANNELS = (SMS, WHATSAPP, VOICE)
#: Every channel an outbound item may go on.
OUTBOUND_CHANNELS = (VOICE, SMS, WHATSAPP, CHAT)

SEND = "send"
HOLD = "hold"
REFUSE = "refuse"

#: Refusal and hold reasons (short, stable: shown in the viewer, counted in metrics).
OPTED_OUT = "opted_out"
NO_CONSENT = "no_consent"
NO_ADDRESS = "no_address"
CUSTOMER_RATE_LIMIT = "customer_rate_limit"
GLOBAL_RATE_LIMIT = "global_rate_limit"
QUIET_HOURS = "quiet_hours"
UNKNOWN_CUSTOMER = "unknown_customer"
NOT_SENDABLE = "not_sendable"
CANCELLED = "cancelled"
REASONS = (
    OPTED_OUT,
    NO_CONSENT,
    NO_ADDRESS,
    CUSTOMER_RATE_LIMIT,
    GLOBAL_RATE_LIMIT,
    QUIET_HOURS,
    UNKNOWN_CUSTOMER,
    NOT_SENDABLE,
    CANCELLED,
)

_HOURS_PATTERN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
#: How far ahead the next open moment of several zones' windows is looked for.
_SEARCH = timedelta(days=1)
_STEP = timedelta(minutes=5)


@dataclass(frozen=True)
class QuietHours:
    """A daily window of local time (``start`` to ``end``, may wrap midnight) in which nothing
    business-initiated reaches a phone. ``start == end``: no quiet hours."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        """``"21:00-08:00"``; ``""`` or ``"off"`` for none."""
        if text.strip().lower() in ("", "off", "none"):
            return cls(time(0, 0), time(0, 0))
        found = _HOURS_PATTERN.match(text)
        if not found:
            raise ConfigError(f"quiet hours must look like 21:00-08:00, got {text!r}")
        h1, m1, h2, m2 = (int(part) for part in found.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
            raise ConfigError(f"quiet hours out of range: {text!r}")
        return cls(time(h1, m1), time(h2, m2))

    def is_quiet(self, local: datetime) -> bool:
        if self.start == self.end:
            return False
        moment = local.time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end

    def ends_after(self, local: datetime) -> datetime:
        """The local moment quiet hours that hold at ``local`` end."""
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0, microsecond=0)
        if end <= local:
            end = _same_wall_time_next_day(end)
        return end

    def __str__(self) -> str:
        if self.start == self.end:
            return "off"
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


def _same_wall_time_next_day(moment: datetime) -> datetime:
    # Wall-clock arithmetic on an aware datetime keeps the wall time across a DST change.
    return moment + timedelta(days=1)


@dataclass(frozen=True)
class RateLimits:
    """At most ``per_customer`` items to one customer per ``customer_seconds`` (beyond: refused,
    it protects the customer), at most ``global_count`` per ``global_seconds`` for the whole
    business (beyond: held to the next window, it protects the vendors' limits)."""

    per_customer: int = 5
    customer_seconds: int = 24 * 3600
    global_count: int = 600
    global_seconds: int = 60


@dataclass(frozen=True)
class OutboundPolicy:
    """The operator's outbound settings (``OUTBOUND_*`` environment variables)."""

    quiet_hours: QuietHours = QuietHours(time(21, 0), time(8, 0))
    #: The zone of customers whose own is unknown (the business's).
    default_timezone: str = "UTC"
    limits: RateLimits = RateLimits()

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None) -> OutboundPolicy:
        """``OUTBOUND_QUIET_HOURS`` (``21:00-08:00``; ``off``), ``OUTBOUND_DEFAULT_TIMEZONE``
        (an IANA zone, ``UTC``), ``OUTBOUND_CUSTOMER_LIMIT`` (``5/86400``: items per customer
        per seconds), ``OUTBOUND_GLOBAL_LIMIT`` (``600/60``)."""
        env = os.environ if env is None else env
        zone = env.get("OUTBOUND_DEFAULT_TIMEZONE", "UTC").strip() or "UTC"
        if zone_info(zone) is None:
            raise ConfigError(f"OUTBOUND_DEFAULT_TIMEZONE is not an IANA time zone: {zone!r}")
        per_customer, customer_seconds = _limit(env, "OUTBOUND_CUSTOMER_LIMIT", "5/86400")
        global_count, global_seconds = _limit(env, "OUTBOUND_GLOBAL_LIMIT", "600/60")
        return cls(
            quiet_hours=QuietHours.parse(env.get("OUTBOUND_QUIET_HOURS", "21:00-08:00")),
            default_timezone=zone,
            limits=RateLimits(per_customer, customer_seconds, global_count, global_seconds),
        )


def _limit(env: Mapping[str, str], name: str, default: str) -> Tuple[int, int]:
    text = env.get(name, default).strip() or default
    count, _, seconds = text.partition("/")
    try:
        pair = int(count), int(seconds)
    except ValueError:
        raise ConfigError(
            f"{name} must look like {default} (count/seconds), got {text!r}"
        ) from None
    if pair[0] < 1 or pair[1] < 1:
        raise ConfigError(f"{name} needs a count and a period of at least 1, got {text!r}")
    return pair


def zone_info(name: str) -> Optional[ZoneInfo]:
    """The zone named ``name``, or None when it is not a known IANA zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def zones_of_phone(e164: Optional[str]) -> Tuple[str, ...]:
    """The IANA zones ``phonenumbers`` gives the number's region (empty when unknown)."""
    if not e164:
        return ()
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return ()
    names = phone_timezones.time_zones_for_number(number)
    return tuple(name for name in names if zone_info(name) is not None)


@dataclass(frozen=True)
class Facts:
    """What is known about the customer and the item when it is decided on."""

    channel: str
    #: The address opted out (STOP on SMS or WhatsApp, or the channel's equivalent).
    opted_out: bool = False
    #: The customer reached the business on the number (a call, an SMS, a WhatsApp message).
    contacted_by_phone: bool = False
    #: The business holds (and sent with the request) a record of the customer's consent.
    consent_record: bool = False
    #: The customer asked for this item just now (a callback they requested).
    customer_requested: bool = False
    #: Where the item goes exists (a phone on file for phone channels).
    has_address: bool = True
    #: The conversation's own time zone, when it knows one.
    conversation_timezone: Optional[str] = None
    #: The zones of the phone number's region.
    phone_zones: Tuple[str, ...] = ()
    #: Items sent to this customer in the current per-customer window.
    customer_sent: int = 0
    #: Items sent fleet-wide in the current global window, and when that window ends.
    global_sent: int = 0
    global_window_ends: Optional[datetime] = None


@dataclass(frozen=True)
class Decision:
    """``verdict`` (send, hold, refuse), the ``reason`` (None for send) and, for a hold, when
    to try again (``not_before``, aware UTC)."""

    verdict: str
    reason: Optional[str] = None
    not_before: Optional[datetime] = None

    @property
    def allowed(self) -> bool:
        return self.verdict == SEND


def customer_zones(facts: Facts, policy: OutboundPolicy) -> Tuple[str, ...]:
    """The zones the customer's quiet hours are read in (see the module's docstring)."""
    if facts.conversation_timezone and zone_info(facts.conversation_timezone) is not None:
        return (facts.conversation_timezone,)
    return facts.phone_zones or (policy.default_timezone,)


def quiet_until(
    now: datetime, zones: Sequence[str], hours: QuietHours, fallback: str
) -> Optional[datetime]:
    """When the quiet hours of every zone in ``zones`` are over (aware UTC); None when they
    are over now."""
    infos = [info for info in (zone_info(name) for name in zones) if info is not None]
    if not infos:
        infos = [zone_info(fallback) or ZoneInfo("UTC")]
    if len(infos) == 1:
        local = now.astimezone(infos[0])
        if not hours.is_quiet(local):
            return None
        return hours.ends_after(local).astimezone(timezone.utc)
    if not any(hours.is_quiet(now.astimezone(info)) for info in infos):
        return None
    # Several zones: the first moment at which none is quiet, searched in steps.
    moment = now.replace(second=0, microsecond=0)
    deadline = now + _SEARCH
    while moment < deadline:
        moment += _STEP
        if not any(hours.is_quiet(moment.astimezone(info)) for info in infos):
            return moment.astimezone(timezone.utc)
    return quiet_until(now, (fallback,), hours, fallback)


def decide(facts: Facts, policy: OutboundPolicy, now: datetime) -> Decision:
    """May the item go now? See the module's docstring for the rules, in the order applied:
    opt-out, address, consent, the customer's rate limit, quiet hours, the global rate limit."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    phone = facts.channel in PHONE_CHANNELS
    if facts.opted_out:
        return Decision(REFUSE, OPTED_OUT)
    if not facts.has_address:
        return Decision(REFUSE, NO_ADDRESS)
    if (
        phone
        and not facts.contacted_by_phone
        and not facts.consent_record
        and not facts.customer_requested
    ):
        return Decision(REFUSE, NO_CONSENT)
    if facts.customer_sent >= policy.limits.per_customer:
        return Decision(REFUSE, CUSTOMER_RATE_LIMIT)
    if phone and not facts.customer_requested:
        zones = customer_zones(facts, policy)
        until = quiet_until(now, zones, policy.quiet_hours, policy.default_timezone)
        if until is not None:
            return Decision(HOLD, QUIET_HOURS, until)
    if facts.global_sent >= policy.limits.global_count:
        ends = facts.global_window_ends or now + timedelta(seconds=policy.limits.global_seconds)
        return Decision(HOLD, GLOBAL_RATE_LIMIT, ends)
    return Decision(SEND)
