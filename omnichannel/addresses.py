"""Channel addresses: one way to reach a customer, as a value in canonical form.

Every connector turns its caller into an :class:`Address`: ``tel:+E164`` (a phone number, as a
caller, Twilio or a user wrote it, normalised with ``phonenumbers``), ``user:<id>`` (a host-site
account), ``anon:<id>`` (an anonymous web chat visitor). Building one checks and normalises it,
so a bad number is an :class:`InvalidAddress` (a 4xx, its message masked) at the edge and never a
conversation. :mod:`omnichannel.identity` maps addresses onto conversations.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Optional

import phonenumbers

from omnichannel.masking import mask, mask_identifier
from omnichannel.redis_client import conversation_key
from omnichannel.settings import load_settings

SCHEMES = ("tel", "user", "anon")
USER_ID_MAX_LENGTH = 128
ANON_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")
E164_PATTERN = re.compile(r"\+[1-9]\d{6,14}")
# Longer input is not a phone number, and phonenumbers' own parsing cost grows with it.
PHONE_INPUT_MAX_LENGTH = 64
PHONE_PREFIXES = ("whatsapp:", "tel:")

#: A conversation with a phone number or a site user is kept this long after the last contact.
KNOWN_TTL_SECONDS = 400 * 24 * 3600
#: An anonymous web chat visitor's records are kept this long after the last contact.
ANONYMOUS_TTL_SECONDS = 30 * 24 * 3600


class InvalidAddress(ValueError):
    """A channel address that cannot identify anyone (bad phone number, empty user id, …).

    The message is safe to log and to return in a 4xx: phone numbers in it are masked.
    """


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
        return f"{self.scheme}:{mask_identifier(self.value, shown)}"

    @property
    def hash_tag(self) -> str:
        """The hash tag of this address's own keys (its own Cluster slot): a digest, so key
        names carry no PII."""
        return "a_" + hashlib.sha256(str(self).encode("utf-8")).hexdigest()

    @property
    def record_key(self) -> str:
        """Redis key of this address's conversation record."""
        return conversation_key(self.hash_tag, "conversation")

    @property
    def ttl_seconds(self) -> int:
        """How long the records of this address last without contact."""
        return ANONYMOUS_TTL_SECONDS if self.scheme == "anon" else KNOWN_TTL_SECONDS


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
