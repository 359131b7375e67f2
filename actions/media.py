"""Pictures customers send: added to the refund request they just started, or acknowledged.

``action_receive_media`` runs for ``send_picture`` (a message of media alone, any channel:
omnichannel/media.py). With a refund request open (the ``refund_order`` slot, set by
``action_request_refund``) it takes the picture: fetches it (Twilio's media of our account
only, with the account's credentials, at most :data:`PHOTO_MAX_BYTES`, within
:data:`FETCH_SECONDS`; a chat upload from the conversation's own uploads), checks that the bytes
are the image they claim to be, and adds it to the request (omnichannel/refunds.py), saying so
(``utter_refund_photo_added``). A picture too large or not an image is answered honestly
(``utter_media_too_large``, ``utter_media_unreadable``); with no request open, or on a message
that only says it carries a picture, ``utter_picture_received``.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple

from rasa_sdk import Action, Tracker
from rasa_sdk.events import EventType, SlotSet
from rasa_sdk.executor import CollectingDispatcher

from omnichannel.media import (
    IMAGE,
    MediaRefused,
    content_matches,
    fetch_twilio_media,
)
from omnichannel.redis_client import REDIS_FAILURES
from omnichannel.refunds import RefundRequests
from omnichannel.settings import load_settings
from omnichannel.uploads import UploadStore

logger = logging.getLogger(__name__)

#: The largest photo taken (WhatsApp's own limit for images, and MMS's for a whole message).
PHOTO_MAX_BYTES = 5 * 1024 * 1024
FETCH_SECONDS = 10.0


def latest_media(tracker: Tracker) -> List[Mapping[str, Any]]:
    """The media of the latest user message (its ``metadata.media``), well-formed items only."""
    metadata = (tracker.latest_message or {}).get("metadata") or {}
    media = metadata.get("media") if isinstance(metadata, Mapping) else None
    return [item for item in media or [] if isinstance(item, Mapping)]


async def photo_bytes(conversation_id: str, item: Mapping[str, Any]) -> Tuple[bytes, str]:
    """The bytes of a picture and the type it claims; raises MediaRefused."""
    if item.get("source") == "upload":
        upload = await UploadStore().get(conversation_id, str(item.get("upload_id") or ""))
        if upload is None:
            raise MediaRefused("unavailable", "no such upload in this conversation")
        return upload.data, upload.content_type
    fetched = await fetch_twilio_media(
        str(item.get("url") or ""),
        load_settings(),
        max_bytes=PHOTO_MAX_BYTES,
        timeout=FETCH_SECONDS,
    )
    return fetched.data, fetched.content_type or str(item.get("content_type") or "")


def _reference(item: Mapping[str, Any], data: bytes, content_type: str) -> Dict[str, Any]:
    reference: Dict[str, Any] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_type": content_type,
        "size": len(data),
        "source": item.get("source") or "twilio",
    }
    if item.get("upload_id"):
        reference["upload_id"] = item["upload_id"]
    else:
        reference["url"] = item.get("url")
    return reference


class ActionReceiveMedia(Action):
    def name(self) -> str:
        return "action_receive_media"

    async def run(
        self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: Dict[str, Any]
    ) -> List[EventType]:
        order: Optional[str] = tracker.get_slot("refund_order")
        pictures = [
            item
            for item in latest_media(tracker)
            if item.get("kind") == IMAGE and not item.get("refused")
        ]
        if not pictures or not order:
            dispatcher.utter_message(response="utter_picture_received")
            return []
        picture = pictures[0]
        try:
            data, claimed = await photo_bytes(tracker.sender_id, picture)
        except MediaRefused as refused:
            logger.warning("picture for %s not taken: %s", tracker.sender_id, refused)
            if refused.reason == "too_large":
                limit = f"{PHOTO_MAX_BYTES // (1024 * 1024)} MB"
                dispatcher.utter_message(response="utter_media_too_large", media_limit=limit)
            else:
                dispatcher.utter_message(response="utter_media_unreadable")
            return []
        if not content_matches(claimed or "image/jpeg", data) or not claimed.startswith("image/"):
            logger.warning(
                "picture for %s is not the image it claims (%s)", tracker.sender_id, claimed
            )
            dispatcher.utter_message(response="utter_media_unreadable")
            return []
        try:
            count = await RefundRequests().add_photo(
                tracker.sender_id, order, _reference(picture, data, claimed)
            )
        except REDIS_FAILURES as error:
            logger.error("photo for %s not recorded: %s", tracker.sender_id, type(error).__name__)
            raise
        if count < 0:
            dispatcher.utter_message(response="utter_refund_photos_full", refund_order=order)
            return []
        dispatcher.utter_message(response="utter_refund_photo_added", refund_order=order)
        return [SlotSet("refund_photo", True)]
