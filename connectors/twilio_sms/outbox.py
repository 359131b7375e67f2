"""The SMS outbox: replies due by REST, recorded in Redis before they are sent, so a replica that
dies mid-send leaves them to another replica instead of losing them.

Each reply to one incoming message is an ``sms_outbox`` item (:mod:`omnichannel.leases`, item id
= the incoming MessageSid) holding the rendered parts, where they go and when sending began. It
is sent through :class:`omnichannel.sms_sender.SmsSender` and completed with the parts' SIDs.

A send's outcome can be unknown (a timeout, a dropped connection, a 5xx, or a replica that died
between asking Twilio and recording the answer). Twilio's message creation has no idempotency
key, so such a reply is never simply sent again: the sender, and any replica taking an item over,
first reads Twilio's records of messages to that number (:meth:`SmsSender.find_sent`) and sends
only the parts not found there. When Twilio cannot be reached at all (nor its records read), the
item stays in the outbox, and the sweeper of whichever replica finds its lease expired tries
again, reconciling first, every lease period, for ``give_up_seconds``; then it is recorded failed
and logged as an error. So a reply is sent at most once per part and never silently dropped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from omnichannel import metrics
from omnichannel.leases import Existing, InFlightWork, Lease
from omnichannel.redis_client import REDIS_FAILURES
from omnichannel.rendering.sms import SmsMessage
from omnichannel.sms_sender import (
    SmsOutcomeUnknown,
    SmsRefused,
    SmsSender,
    SmsSendFailed,
    TwilioUnreachable,
)

logger = logging.getLogger(__name__)

SMS_OUTBOX = "sms_outbox"
#: How long a reply Twilio cannot be reached for is retried before it is recorded failed.
DEFAULT_GIVE_UP_SECONDS = 3600.0


def _part(message: SmsMessage) -> Dict[str, Any]:
    return {
        "body": message.body,
        "media_urls": list(message.media_urls),
        **({"params": dict(message.params)} if message.params else {}),
    }


def _message(part: Dict[str, Any]) -> SmsMessage:
    return SmsMessage(
        body=part["body"], media_urls=tuple(part["media_urls"]), params=part.get("params") or {}
    )


class SmsOutbox:
    """The ``sms_outbox`` items of one Redis: posted by the connector, delivered by whichever
    replica holds them."""

    def __init__(
        self,
        redis_url: str,
        sender: Callable[[], SmsSender],
        *,
        give_up_seconds: float = DEFAULT_GIVE_UP_SECONDS,
        **work_options: Any,
    ) -> None:
        """``work_options`` go to :class:`InFlightWork` (``keep_seconds``; tests play a
        replica that dies with ``owner`` and a short ``lease_seconds``)."""
        self.work = InFlightWork(redis_url, SMS_OUTBOX, **work_options)
        self.sender = sender
        self.give_up_seconds = give_up_seconds

    async def post(
        self,
        conversation_id: str,
        reply_id: str,
        messages: Sequence[SmsMessage],
        to: str,
        from_number: Optional[str],
    ) -> Optional[Lease]:
        """Records a reply (``reply_id``: the incoming MessageSid it answers), leased to this
        replica; None when it is recorded already (a takeover re-running its turn), whoever
        delivers it. Raises a Redis failure: the reply is then not recorded."""
        found = await self.work.record(
            conversation_id,
            reply_id,
            {
                "to": to,
                "from": from_number,
                "parts": [_part(m) for m in messages],
                "since": time.time(),
            },
        )
        await self._report_depth()
        return None if isinstance(found, Existing) else found

    async def deliver(self, lease: Lease) -> None:
        """Sends the reply ``lease`` holds and completes it with the parts' SIDs. A taken-over
        reply is reconciled with Twilio's records first (the dead owner may have sent parts of
        it). A reply whose outcome stays unknown is left running: the lease then runs out and a
        sweeper tries again (reconciling first), until ``give_up_seconds`` have passed."""
        payload = lease.payload
        messages = [_message(part) for part in payload["parts"]]
        sender = self.sender()
        try:
            known: List[Optional[str]] = []
            if lease.taken_over:
                known = await sender.find_sent(
                    payload["to"], payload["from"], messages, payload["since"]
                )
                logger.info(
                    "SMS reply to %s (conversation %s), attempt %d: %d of %d part(s) found sent",
                    lease.item_id,
                    lease.conversation_id,
                    lease.attempt,
                    sum(1 for sid in known if sid),
                    len(messages),
                )
            sids = await sender.send_rendered(
                lease.conversation_id,
                messages,
                to=payload["to"],
                from_number=payload["from"],
                known=known,
                since=payload["since"],
                reply_to=lease.item_id,
            )
            outcome: Dict[str, Any] = {"sids": sids}
            logger.info("SMS %s answered by REST: %s", lease.item_id, ", ".join(sids))
        except (SmsOutcomeUnknown, TwilioUnreachable) as error:
            waited = time.time() - payload["since"]
            if waited < self.give_up_seconds:
                logger.error(
                    "SMS reply to %s not delivered yet (%s); kept in the outbox, retried after "
                    "its lease (%.0f s)",
                    lease.item_id,
                    error,
                    self.work.lease_seconds,
                )
                return
            logger.error("SMS reply to %s given up after %.0f s: %s", lease.item_id, waited, error)
            outcome = {"failed": str(error), "sids": error.sent}
        except SmsRefused as refused:
            logger.warning("SMS reply to %s not sent: %s", lease.item_id, refused)
            outcome = {"refused": str(refused)}
        except SmsSendFailed as failed:
            logger.error("SMS reply to %s not sent: %s", lease.item_id, failed)
            outcome = {"failed": str(failed), "sids": failed.sent}
        if not await self.work.complete(lease, outcome):
            logger.warning("SMS reply to %s: completed by another replica", lease.item_id)
        await self._report_depth()

    async def _report_depth(self) -> None:
        """The outbox depth gauge, on change (the sweeper also sets it every second)."""
        with contextlib.suppress(*REDIS_FAILURES):
            metrics.IN_FLIGHT_WORK.labels(kind=SMS_OUTBOX).set(await self.work.depth())
