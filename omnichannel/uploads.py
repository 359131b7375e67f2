"""Files a web chat customer attaches: bounded, type-checked by their bytes, kept with the
conversation, served back only with a safe type.

The chat widget uploads a file (``POST /webhooks/webchat/files``, the customer's chat token);
it is accepted only when it is at most :data:`MAX_UPLOAD_BYTES`, its bytes are one of
:data:`UPLOAD_TYPES` (sniffed, whatever the browser or the file name claims: a script renamed
``photo.jpg`` is refused), and the conversation holds fewer than :data:`MAX_UPLOADS`. It is then
referenced from the next chat message's ``metadata.media`` like a picture from WhatsApp
(omnichannel/media.py), and actions read it here, never over HTTP.

Keys, in the conversation's slot, expiring :data:`UPLOAD_TTL_SECONDS` after the upload:

- ``omni:{<cid>}:upload:<id>``: hash ``data``, ``content_type`` (the sniffed one), ``size``,
  ``sha256``, ``name`` (the file name as given, bounded and cleaned, shown, never used as a
  path), ``at``;
- ``omni:{<cid>}:uploads``: sorted set of the conversation's upload ids by time (the count
  bound).

Served back (the widget showing a thumbnail, the viewer), a file keeps its sniffed type, which
is never HTML, SVG or script; documents are served as attachments, and every answer carries
``X-Content-Type-Options: nosniff`` and a sandboxing Content-Security-Policy
(:func:`safe_headers`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from typing import Dict, Optional

from omnichannel.media import DOCUMENT, IMAGE, sniff_type
from omnichannel.redis_client import LuaScript, RedisBacked, conversation_key

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_UPLOADS = 50
UPLOAD_TTL_SECONDS = 30 * 24 * 3600
#: What a chat customer may attach, by the type its bytes are.
UPLOAD_TYPES = {
    "image/jpeg": IMAGE,
    "image/png": IMAGE,
    "image/webp": IMAGE,
    "image/gif": IMAGE,
    "application/pdf": DOCUMENT,
}
UPLOAD_ID = re.compile(r"u_[A-Za-z0-9_-]{22}")
MAX_NAME_CHARS = 120
_UNSAFE_NAME = re.compile(r"[^\w .()-]+", re.UNICODE)

# Stores an upload unless the conversation holds MAX_UPLOADS already.
# KEYS: upload hash, uploads zset. ARGV: id, now ms, ttl ms, cap, then field/value pairs.
# Returns 1, or 0 when full.
_PUT = LuaScript(
    """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[2]) - tonumber(ARGV[3]))
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 0 end
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
)


class UploadRefused(Exception):
    """An upload we do not take; ``code`` (``too_large``, ``type``, ``too_many``, ``empty``) and
    a message safe to show the customer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Upload:
    upload_id: str
    data: bytes
    content_type: str
    size: int
    sha256: str
    name: str

    @property
    def kind(self) -> str:
        return UPLOAD_TYPES.get(self.content_type, DOCUMENT)

    def media(self, url: str) -> Dict[str, object]:
        """The upload as ``metadata.media`` describes it (omnichannel/media.py)."""
        return {
            "kind": self.kind,
            "content_type": self.content_type,
            "url": url,
            "size": self.size,
            "source": "upload",
            "upload_id": self.upload_id,
            "name": self.name,
        }


def clean_name(name: Optional[str]) -> str:
    """A file name fit to show: no path, no control or markup characters, bounded."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE_NAME.sub("_", base).strip(" .")
    return cleaned[:MAX_NAME_CHARS] or "file"


def safe_headers(content_type: str, name: str) -> Dict[str, str]:
    """Headers for serving an upload back: its sniffed type, no sniffing by the browser, no
    script, documents downloaded rather than shown."""
    disposition = "inline" if UPLOAD_TYPES.get(content_type) == IMAGE else "attachment"
    return {
        "Content-Type": content_type,
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Content-Disposition": f'{disposition}; filename="{clean_name(name)}"',
        "Cache-Control": "private, max-age=3600",
    }


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class UploadStore(RedisBacked):
    """The uploads of conversations (any event loop's client unless one is given)."""

    @staticmethod
    def key(conversation_id: str, upload_id: str) -> str:
        return conversation_key(conversation_id, "upload", upload_id)

    @staticmethod
    def index_key(conversation_id: str) -> str:
        return conversation_key(conversation_id, "uploads")

    async def put(self, conversation_id: str, data: bytes, name: Optional[str]) -> Upload:
        """Checks and keeps an upload; raises UploadRefused."""
        if not data:
            raise UploadRefused("empty", "The file is empty.")
        if len(data) > MAX_UPLOAD_BYTES:
            raise UploadRefused(
                "too_large", f"Files can be at most {MAX_UPLOAD_BYTES // (1024 * 1024)} MB."
            )
        content_type = sniff_type(data)
        if content_type not in UPLOAD_TYPES:
            raise UploadRefused("type", "Only photos (JPG, PNG, WebP, GIF) and PDFs can be sent.")
        upload = Upload(
            upload_id="u_" + secrets.token_urlsafe(16),
            data=data,
            content_type=content_type,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            name=clean_name(name),
        )
        now_ms = int(time.time() * 1000)
        fields = [
            "data", data,
            "content_type", upload.content_type,
            "size", str(upload.size),
            "sha256", upload.sha256,
            "name", upload.name,
            "at", str(now_ms),
        ]  # fmt: skip
        stored = await _PUT(
            self.redis,
            [self.key(conversation_id, upload.upload_id), self.index_key(conversation_id)],
            [upload.upload_id, now_ms, UPLOAD_TTL_SECONDS * 1000, MAX_UPLOADS, *fields],
        )
        if not stored:
            raise UploadRefused("too_many", f"A conversation can hold {MAX_UPLOADS} files.")
        return upload

    async def get(self, conversation_id: str, upload_id: str) -> Optional[Upload]:
        """The upload, when it exists in this conversation (None for a malformed id too)."""
        if not UPLOAD_ID.fullmatch(upload_id or ""):
            return None
        raw = await self.redis.hgetall(self.key(conversation_id, upload_id))
        if not raw:
            return None
        fields = {_text(k): v for k, v in raw.items()}
        return Upload(
            upload_id=upload_id,
            data=bytes(fields["data"]) if isinstance(fields["data"], bytes) else fields["data"],
            content_type=_text(fields["content_type"]),
            size=int(_text(fields["size"])),
            sha256=_text(fields["sha256"]),
            name=_text(fields["name"]),
        )
