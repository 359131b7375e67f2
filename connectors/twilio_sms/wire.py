"""Twilio's wire format: what Twilio posts, read into typed objects, and the TwiML we answer.

What arrives: an incoming message (:class:`InboundSms`, with its :class:`InboundMedia`), a
delivery report (:class:`StatusCallback`), the idempotency header and the opt-out keywords. Every
field is bounded (length, characters, SID shape, ``NumMedia`` in ASCII digits) so a bad request
is a 4xx with a reason (:class:`Rejected`), never a 500. These take a form mapping (the signed
form :mod:`connectors.twilio_sms.auth` returns) and are unit-tested on plain dicts.

SMS and WhatsApp come through the same webhook; a ``From`` of ``whatsapp:+…`` is WhatsApp, whose
extra fields are read too (Twilio's messaging webhook request page, "WhatsApp-specific
parameters"): ``ProfileName``, a tapped quick reply's ``ButtonPayload``/``ButtonText``, a
shared location's ``Latitude``/``Longitude``/``Address``/``Label``. Which field carries a
list-picker choice is not documented plainly (``ButtonPayload`` per some accounts, ``ListId``
per others): both are read, and a choice counts only when it is an option the bot offered.

What we answer: TwiML, built with twilio-python's ``MessagingResponse`` (:func:`twiml`). What
the messages say and how they are cut is decided by :mod:`omnichannel.rendering.sms` (and
``whatsapp``); this only wraps rendered :class:`SmsMessage` objects in the XML Twilio expects.
No Sanic, no Rasa.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from twilio.twiml.messaging_response import MessagingResponse

from omnichannel.addresses import Address, InvalidAddress, phone_address
from omnichannel.channels import SMS, WHATSAPP, WHATSAPP_PREFIX
from omnichannel.media import OTHER, intent_for, media_kind, normal_type
from omnichannel.rendering.sms import SmsMessage
from omnichannel.sms_sender import OPTED_OUT_ERROR

MAX_BODY_CHARS = 4096
MAX_FIELD_CHARS = 4096
MAX_URL_CHARS = 2048
MAX_MEDIA = 10
MAX_TOKEN_CHARS = 256
SID_PATTERN = re.compile(r"[A-Z]{2}[0-9a-fA-F]{32}")
STATUS_PATTERN = re.compile(r"[a-z_-]{1,32}")
ERROR_CODE_PATTERN = re.compile(r"\d{1,10}")
#: Twilio sends ASCII digits; ``str.isdigit`` would also pass "²", which ``int`` then refuses.
ASCII_DIGITS = re.compile(r"[0-9]+")
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

#: Twilio's default opt-out keywords (whole message, any case) and their opt-in counterparts.
STOP_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
START_KEYWORDS = frozenset({"START", "UNSTOP"})
#: "YES" re-subscribes only a number that is opted out; otherwise it is an ordinary answer.
START_IF_OPTED_OUT = frozenset({"YES"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
#: Intent messages sent to Rasa for turns that have no text of their own (media alone: see
#: omnichannel.media.intent_for).
HELP_INTENT = "/help"
PICTURE_INTENT = "/send_picture"
MAX_PROFILE_NAME_CHARS = 256
#: A coordinate as Twilio sends it: a decimal number.
COORDINATE = re.compile(r"-?\d{1,3}(?:\.\d{1,12})?")
_KEYWORDS = STOP_KEYWORDS | START_KEYWORDS | START_IF_OPTED_OUT | HELP_KEYWORDS
#: ``OptOutType`` values Twilio's Advanced Opt-Out sends for a keyword it recognised.
_OPT_OUT_TYPES = ("STOP", "START", "HELP")

FAILED_STATUSES = frozenset({"failed", "undelivered"})


class Rejected(Exception):
    """A webhook request we refuse (here or in the signature check): ``status`` and a short
    ``reason``, safe to log and to return to the caller."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _field(form: Mapping[str, str], name: str, limit: int = MAX_FIELD_CHARS) -> Optional[str]:
    value = form.get(name)
    if value is None:
        return None
    if len(value) > limit:
        raise Rejected(413, f"{name} longer than {limit} characters")
    if CONTROL_CHARS.search(value):
        raise Rejected(400, f"{name} contains control characters")
    return value


def _sid(form: Mapping[str, str], *names: str) -> str:
    for name in names:
        value = _field(form, name)
        if value:
            if not SID_PATTERN.fullmatch(value):
                raise Rejected(400, f"{name} is not a Twilio SID")
            return value
    raise Rejected(400, f"{names[0]} missing")


def idempotency_token(value: Optional[str]) -> Optional[str]:
    """``I-Twilio-Idempotency-Token`` when it is usable as a key; a malformed one is ignored
    (the MessageSid still dedupes), not refused."""
    if value is None or len(value) > MAX_TOKEN_CHARS or CONTROL_CHARS.search(value):
        return None
    return value


@dataclass(frozen=True)
class InboundMedia:
    url: str
    content_type: str

    @property
    def kind(self) -> str:
        return media_kind(self.content_type)

    def as_dict(self) -> Dict[str, Any]:
        """The media as Rasa gets it (omnichannel/media.py): a type we do not take is marked
        refused, so no action fetches it."""
        item: Dict[str, Any] = {
            "kind": self.kind,
            "content_type": normal_type(self.content_type),
            "url": self.url,
            "size": None,
            "source": "twilio",
        }
        if self.kind == OTHER:
            item["refused"] = "type"
        return item


@dataclass(frozen=True)
class Location:
    latitude: float
    longitude: float
    address: Optional[str] = None
    label: Optional[str] = None

    def as_dict(self) -> Dict[str, Any]:
        return {
            "latitude": self.latitude,
            "longitude": self.longitude,
            **({"address": self.address} if self.address else {}),
            **({"label": self.label} if self.label else {}),
        }


def _location(form: Mapping[str, str]) -> Optional[Location]:
    latitude = _field(form, "Latitude", 32)
    longitude = _field(form, "Longitude", 32)
    if latitude is None and longitude is None:
        return None
    if not (
        latitude
        and longitude
        and COORDINATE.fullmatch(latitude.strip())
        and COORDINATE.fullmatch(longitude.strip())
    ):
        raise Rejected(400, "Latitude and Longitude must both be decimal numbers")
    lat, lon = float(latitude), float(longitude)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise Rejected(400, "Latitude or Longitude out of range")
    return Location(
        lat, lon, _field(form, "Address", 512) or None, _field(form, "Label", 256) or None
    )


@dataclass(frozen=True)
class InboundSms:
    """An incoming message webhook, checked field by field."""

    message_sid: str
    sender: str  # ``From`` as received (``+1…`` or ``whatsapp:+1…``), never logged
    address: Address
    to: str
    body: str
    media: Tuple[InboundMedia, ...] = ()
    opt_out_type: Optional[str] = None
    #: WhatsApp: the id of the option the customer tapped (a quick reply or a list item) and
    #: its title; the sender's display name; a shared location.
    tapped: Optional[str] = None
    tapped_title: Optional[str] = None
    profile_name: Optional[str] = None
    location: Optional[Location] = None

    @classmethod
    def parse(cls, form: Mapping[str, str], default_region: str) -> InboundSms:
        """``form`` read field by field; ``From`` in national format is read in
        ``default_region`` (``DEFAULT_PHONE_REGION``). Raises Rejected."""
        message_sid = _sid(form, "MessageSid", "SmsMessageSid", "SmsSid")
        sender = _field(form, "From", 64)
        if not sender:
            raise Rejected(400, "From missing")
        try:
            address = phone_address(sender, default_region)
        except InvalidAddress as error:
            raise Rejected(400, f"From: {error}") from None
        body = _field(form, "Body", MAX_BODY_CHARS)
        if body is None:
            raise Rejected(400, "Body missing")
        raw_count = _field(form, "NumMedia", 16) or "0"
        if not ASCII_DIGITS.fullmatch(raw_count) or int(raw_count) > MAX_MEDIA:
            raise Rejected(400, f"NumMedia must be 0..{MAX_MEDIA}")
        media = []
        for index in range(int(raw_count)):
            url = _field(form, f"MediaUrl{index}", MAX_URL_CHARS)
            if not url or not url.lower().startswith(("https://", "http://")):
                raise Rejected(400, f"MediaUrl{index} missing or not an http(s) URL")
            content_type = _field(form, f"MediaContentType{index}", 128) or ""
            media.append(InboundMedia(url=url, content_type=content_type))
        opt_out = (_field(form, "OptOutType", 32) or "").upper()
        whatsapp = sender.strip().lower().startswith(WHATSAPP_PREFIX)
        tapped = (_field(form, "ButtonPayload") or _field(form, "ListId")) if whatsapp else None
        title = (_field(form, "ButtonText") or _field(form, "ListTitle")) if whatsapp else None
        return cls(
            message_sid=message_sid,
            sender=sender.strip(),
            address=address,
            to=(_field(form, "To", 64) or "").strip(),
            body=body,
            media=tuple(media),
            opt_out_type=opt_out if opt_out in _OPT_OUT_TYPES else None,
            tapped=tapped or None,
            tapped_title=title or None,
            profile_name=(
                _field(form, "ProfileName", MAX_PROFILE_NAME_CHARS) or None if whatsapp else None
            ),
            location=_location(form) if whatsapp else None,
        )

    @property
    def channel(self) -> str:
        """The channel kind: ``whatsapp`` for a ``whatsapp:`` sender, else ``sms``."""
        return WHATSAPP if self.sender.lower().startswith(WHATSAPP_PREFIX) else SMS

    @property
    def keyword(self) -> Optional[str]:
        """The keyword this message is: Twilio's ``OptOutType`` when its Advanced Opt-Out
        recognised one (in any language), else the opt-out family word the whole message is,
        upper-cased; None for an ordinary message."""
        if self.opt_out_type:
            return self.opt_out_type
        word = self.body.strip().rstrip(".!").strip().upper()
        return word if word in _KEYWORDS else None

    def opt_out_change(self, opted_out: bool) -> Optional[bool]:
        """What this message does to the number's subscription: True opts it out, False opts
        it back in, None leaves it as it is (the message is then answered, or not, as usual)."""
        keyword = self.keyword
        if keyword in STOP_KEYWORDS:
            return True
        if keyword in START_KEYWORDS or (keyword in START_IF_OPTED_OUT and opted_out):
            return False
        return None

    @property
    def intent(self) -> Optional[str]:
        """The intent message Rasa gets for a turn without text of its own (HELP, a picture,
        voice note, file or location alone); None when the text itself is the message."""
        if self.keyword in HELP_KEYWORDS:
            return HELP_INTENT
        if not self.body.strip() and self.tapped is None:
            media = [item.as_dict() for item in self.media]
            return intent_for(media, self.location is not None) or PICTURE_INTENT
        return None

    @property
    def is_empty(self) -> bool:
        """No text, no media, no location, no tap: nothing to answer."""
        return (
            not self.body.strip()
            and not self.media
            and self.location is None
            and self.tapped is None
        )

    @property
    def reply_to(self) -> str:
        """Where replies by REST go: the sender's E.164 number, on WhatsApp if they wrote there."""
        if self.sender.lower().startswith("whatsapp:"):
            return f"whatsapp:{self.address.value}"
        return self.address.value

    def metadata(self) -> Dict[str, Any]:
        metadata: Dict[str, Any] = {
            "channel": self.channel,
            "address": str(self.address),
            "message_sid": self.message_sid,
            "to": self.to,
            "media": [item.as_dict() for item in self.media],
        }
        if self.location is not None:
            metadata["location"] = self.location.as_dict()
        if self.profile_name:
            metadata["profile_name"] = self.profile_name
        return metadata


@dataclass(frozen=True)
class StatusCallback:
    """A message status callback (``MessageStatus``, ``ErrorCode``) for one of our SMS or
    WhatsApp messages; ``reply_to`` is the inbound MessageSid an inline (TwiML) reply answered,
    from the callback URL's query."""

    message_sid: str
    status: str
    error_code: Optional[str]
    recipient: Optional[Address]
    channel: str = SMS
    reply_to: Optional[str] = None

    @classmethod
    def parse(
        cls, form: Mapping[str, str], default_region: str, reply_to: Optional[str] = None
    ) -> StatusCallback:
        """``form`` read field by field (``To`` as :meth:`InboundSms.parse` reads ``From``);
        a malformed ``reply_to`` is ignored."""
        message_sid = _sid(form, "MessageSid", "SmsSid")
        status = (_field(form, "MessageStatus", 32) or _field(form, "SmsStatus", 32) or "").lower()
        if not STATUS_PATTERN.fullmatch(status):
            raise Rejected(400, "MessageStatus missing or malformed")
        error_code = _field(form, "ErrorCode", 16) or None
        if error_code is not None and not ERROR_CODE_PATTERN.fullmatch(error_code):
            raise Rejected(400, "ErrorCode is not a number")
        to = _field(form, "To", 64)
        recipient = None
        if to:
            try:
                recipient = phone_address(to, default_region)
            except InvalidAddress as error:
                raise Rejected(400, f"To: {error}") from None
        channel = WHATSAPP if (to or "").lower().startswith(WHATSAPP_PREFIX) else SMS
        answered = reply_to if reply_to and SID_PATTERN.fullmatch(reply_to) else None
        return cls(message_sid, status, error_code, recipient, channel, answered)

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES or self.error_code == OPTED_OUT_ERROR

    @property
    def opted_out(self) -> bool:
        """Twilio reports the number unsubscribed (error 21610)."""
        return self.error_code == OPTED_OUT_ERROR


def twiml(messages: Sequence[SmsMessage] = (), status_callback: Optional[str] = None) -> str:
    """A TwiML answer carrying ``messages``; an empty ``<Response/>`` means "no reply".
    ``status_callback``: where Twilio reports each message's progress (the ``<Message>``
    verb's ``statusCallback`` attribute), so inline replies get receipts too."""
    answer = MessagingResponse()
    for message in messages:
        extra = {"status_callback": status_callback} if status_callback else {}
        element = answer.message(message.body, **extra)
        for url in message.media_urls:
            element.media(url)
    return answer.to_xml()


EMPTY_TWIML = twiml()
