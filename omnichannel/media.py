"""Pictures, voice notes, files and locations customers send: how each reaches Rasa, and how an
action may fetch one.

Every channel hands Rasa the same structure in the user message's ``metadata.media`` (a list)
and ``metadata.location``::

    {"kind": "image", "content_type": "image/jpeg", "url": "https://api.twilio.com/…/Media/ME…",
     "size": null, "source": "twilio"}
    {"kind": "document", "content_type": "application/pdf", "upload_id": "u_…", "size": 48213,
     "url": "/webhooks/webchat/files/u_…", "source": "upload", "name": "receipt.pdf"}
    location: {"latitude": 52.37, "longitude": 4.89, "address": "…", "label": "…"}

``kind`` is one of :data:`KINDS` (``other`` for a type we do not take, which is then also
``"refused": "type"``). A message with media and no text stands for an intent (:func:`intent_for`),
so designers answer each kind honestly ("I can't listen to voice notes yet") in rules.

**Fetching** (:func:`fetch_twilio_media`) is for actions that need the bytes (a refund that wants
a photo of the damage). It only ever asks Twilio's own media URL of our account
(``https://api.twilio.com/2010-04-01/Accounts/<our SID>/Messages/…/Media/…``, or the same path on
``TWILIO_API_BASE_URL``), with the account's credentials (Twilio may enforce HTTP auth on media),
and follows Twilio's redirect to its short-lived URL only on Twilio's media hosts, without the
credentials; any other URL in a webhook is never fetched. Every fetch has a size bound (checked
on ``Content-Length`` and again while reading) and a total timeout, and the bytes must be of the
type they claim (:func:`sniff_type`).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence
from urllib.parse import urljoin, urlsplit

import aiohttp

from omnichannel.settings import Settings

IMAGE = "image"
AUDIO = "audio"
VIDEO = "video"
DOCUMENT = "document"
CONTACT = "contact"
OTHER = "other"
KINDS = (IMAGE, AUDIO, VIDEO, DOCUMENT, CONTACT, OTHER)

#: Content types we take, by kind: what WhatsApp and MMS deliver (Twilio's WhatsApp media
#: guidance and its MMS accepted types), and what the web chat accepts for upload.
ACCEPTED_TYPES: Mapping[str, str] = {
    "image/jpeg": IMAGE,
    "image/jpg": IMAGE,
    "image/png": IMAGE,
    "image/webp": IMAGE,
    "image/gif": IMAGE,
    "image/heic": IMAGE,
    "audio/ogg": AUDIO,
    "audio/amr": AUDIO,
    "audio/3gpp": AUDIO,
    "audio/aac": AUDIO,
    "audio/mpeg": AUDIO,
    "audio/mp4": AUDIO,
    "audio/wav": AUDIO,
    "video/mp4": VIDEO,
    "video/3gpp": VIDEO,
    "video/quicktime": VIDEO,
    "application/pdf": DOCUMENT,
    "application/msword": DOCUMENT,
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": DOCUMENT,
    "application/vnd.ms-excel": DOCUMENT,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": DOCUMENT,
    "application/vnd.ms-powerpoint": DOCUMENT,
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": DOCUMENT,
    "text/vcard": CONTACT,
    "text/x-vcard": CONTACT,
}

#: Intents a message of media alone stands for (domain.yml's intents), by what it carries.
PICTURE_INTENT = "/send_picture"
VOICE_NOTE_INTENT = "/send_voice_note"
FILE_INTENT = "/send_file"
LOCATION_INTENT = "/share_location"
UNSUPPORTED_INTENT = "/send_unsupported_file"

#: Twilio's API host, which every MediaUrl of a message names, and the hosts it redirects a
#: media request to (support.twilio.com 223183748: mms.twiliocdn.com with enforced HTTP auth,
#: s3-external-1.amazonaws.com without).
TWILIO_API_HOST = "api.twilio.com"
TWILIO_MEDIA_REDIRECT_HOSTS = frozenset(
    {"mms.twiliocdn.com", "media.twiliocdn.com", "s3-external-1.amazonaws.com"}
)
#: What an action fetches at most, and how long it may take.
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_REDIRECTS = 3
_MEDIA_PATH = re.compile(
    r"^/2010-04-01/Accounts/(AC[0-9a-fA-F]{32})/Messages/(M[MS][0-9a-fA-F]{32})"
    r"/Media/(ME[0-9a-fA-F]{32})$"
)


def normal_type(content_type: str) -> str:
    """``image/JPEG; charset=…`` as ``image/jpeg``."""
    return content_type.split(";", 1)[0].strip().lower()


def media_kind(content_type: str) -> str:
    """The kind of a content type (:data:`OTHER` for one we do not take)."""
    return ACCEPTED_TYPES.get(normal_type(content_type), OTHER)


def intent_for(media: Sequence[Mapping[str, Any]], has_location: bool) -> Optional[str]:
    """The intent a message of media alone (no text) stands for, or None when it has none.
    Pictures win over voice notes over other files; a location shared alone is a location."""
    kinds = {item.get("kind") for item in media}
    if not kinds and has_location:
        return LOCATION_INTENT
    if not kinds:
        return None
    if IMAGE in kinds:
        return PICTURE_INTENT
    if AUDIO in kinds:
        return VOICE_NOTE_INTENT
    if kinds == {OTHER}:
        return UNSUPPORTED_INTENT
    return FILE_INTENT


#: Leading bytes of the types we accept: (offset, signature, content type).
_SIGNATURES = (
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"OggS", "audio/ogg"),
    (0, b"#!AMR", "audio/amr"),
    (0, b"ID3", "audio/mpeg"),
    (0, b"\xff\xfb", "audio/mpeg"),
    (0, b"\xff\xf3", "audio/mpeg"),
    (0, b"\xff\xf1", "audio/aac"),
    (0, b"\xff\xf9", "audio/aac"),
)


def sniff_type(data: bytes) -> Optional[str]:
    """The content type ``data`` really is, from its first bytes (None when unrecognised).
    ZIP-based Office documents and ISO media (mp4, 3gp, heic) are recognised by their
    containers."""
    for offset, signature, content_type in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"mif1"):
            return "image/heic"
        if brand.startswith(b"3g"):
            return "video/3gpp"
        if brand == b"qt  ":
            return "video/quicktime"
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        return "video/mp4"
    if data[:4] == b"PK\x03\x04":
        return "application/zip"
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        return "application/x-ole-storage"
    if data.lstrip()[:11].upper() == b"BEGIN:VCARD":
        return "text/vcard"
    return None


#: Declared types whose bytes sniff as a container shared by several of them.
_CONTAINERS = {
    "application/zip": DOCUMENT,
    "application/x-ole-storage": DOCUMENT,
}


def content_matches(declared: str, data: bytes) -> bool:
    """Whether ``data`` is of the accepted type ``declared`` (its kind, for containers that
    hold several: Office files are ZIP or OLE, audio in MP4 is ISO media)."""
    declared = normal_type(declared)
    if declared not in ACCEPTED_TYPES:
        return False
    sniffed = sniff_type(data)
    if sniffed is None:
        return False
    if sniffed == declared:
        return True
    kind = ACCEPTED_TYPES[declared]
    if sniffed in _CONTAINERS:
        return _CONTAINERS[sniffed] == kind and declared not in ("application/pdf",)
    if sniffed in ("video/mp4", "audio/mp4", "video/3gpp"):
        return kind in (AUDIO, VIDEO)
    # jpg/jpeg spellings, mpeg audio frames and the like: the same kind is enough.
    return ACCEPTED_TYPES.get(sniffed) == kind and kind in (IMAGE, AUDIO)


class MediaRefused(Exception):
    """A media fetch that was not (or not fully) done; ``reason`` is one of ``host`` (not
    Twilio's media of our account), ``too_large``, ``type`` (bytes not of the claimed type),
    ``unavailable`` (Twilio answered an error or could not be reached in time)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class FetchedMedia:
    data: bytes
    content_type: str


def _api_origin(settings: Settings) -> str:
    base = settings.twilio_api_base_url or f"https://{TWILIO_API_HOST}"
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}".lower()


def is_twilio_media_url(url: str, settings: Settings) -> bool:
    """Whether ``url`` is a media URL of a message of our own account on Twilio's API."""
    parts = urlsplit(url)
    if f"{parts.scheme}://{parts.netloc}".lower() != _api_origin(settings):
        return False
    if parts.query or parts.fragment or parts.username or parts.password:
        return False
    match = _MEDIA_PATH.match(parts.path)
    return match is not None and match.group(1) == settings.twilio_account_sid


def _redirect_allowed(url: str, settings: Settings) -> bool:
    parts = urlsplit(url)
    if settings.twilio_api_base_url:
        # The local fake redirects to its own short-lived URLs.
        return f"{parts.scheme}://{parts.netloc}".lower() == _api_origin(settings)
    return parts.scheme == "https" and (parts.hostname or "") in TWILIO_MEDIA_REDIRECT_HOSTS


async def _read_bounded(answer: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    declared = answer.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise MediaRefused("too_large", f"{declared} bytes, more than {max_bytes}")
    data = bytearray()
    async for chunk in answer.content.iter_chunked(64 * 1024):
        data.extend(chunk)
        if len(data) > max_bytes:
            raise MediaRefused("too_large", f"more than {max_bytes} bytes")
    return bytes(data)


async def fetch_twilio_media(
    url: str,
    settings: Settings,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> FetchedMedia:
    """The bytes of a Twilio media URL of our account (see the module docstring), within
    ``timeout`` seconds in all (redirects included). Raises MediaRefused; never fetches a URL
    that is not Twilio's media."""
    if not is_twilio_media_url(url, settings):
        raise MediaRefused("host", "not a media URL of this Twilio account")
    try:
        return await asyncio.wait_for(_fetch(url, settings, max_bytes), timeout)
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        raise MediaRefused("unavailable", type(error).__name__) from None


async def _fetch(url: str, settings: Settings, max_bytes: int) -> FetchedMedia:
    credentials: Optional[aiohttp.BasicAuth] = aiohttp.BasicAuth(
        str(settings.twilio_account_sid), str(settings.twilio_auth_token)
    )
    async with aiohttp.ClientSession() as session:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            async with session.get(current, auth=credentials, allow_redirects=False) as answer:
                if answer.status in (301, 302, 303, 307, 308):
                    target = urljoin(current, answer.headers.get("Location", ""))
                    if not _redirect_allowed(target, settings):
                        raise MediaRefused("host", "redirected outside Twilio's media")
                    # Twilio's short-lived URL needs no credentials: they stay home.
                    current, credentials = target, None
                    continue
                if answer.status != 200:
                    raise MediaRefused("unavailable", f"HTTP {answer.status}")
                data = await _read_bounded(answer, max_bytes)
                return FetchedMedia(data, normal_type(answer.headers.get("Content-Type", "")))
    raise MediaRefused("unavailable", "too many redirects")


def describe(item: Mapping[str, Any]) -> Dict[str, Any]:
    """A media item as metadata keeps it (only the known fields, bounded)."""
    return {
        key: item[key]
        for key in ("kind", "content_type", "url", "size", "source", "upload_id", "name", "refused")
        if item.get(key) is not None
    }
