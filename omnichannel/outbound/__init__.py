"""Reaching customers first: business-initiated messages and calls (notifications from the
shop's systems, callbacks, reminders), with consent, quiet hours, rate limits and durable,
exactly-once delivery.

Every business-initiated item goes through the same path, whoever sends it and on whichever
channel:

- :mod:`~omnichannel.outbound.policy` (pure): the one decision "may we send this to this
  customer now, and if not, why, or when": consent, the customer's local quiet hours, rate
  limits;
- :mod:`~omnichannel.outbound.consent`: consent records per address (STOP/START and the
  channels' equivalents, business consent records), with time and source;
- :mod:`~omnichannel.outbound.limits`: per-customer and global rate limits in Redis;
- :mod:`~omnichannel.outbound.gate`: gathers the facts the decision needs from Redis;
- :mod:`~omnichannel.outbound.items`: outbound items (scheduled, queued, sending, sent,
  refused…) as records, and :class:`~omnichannel.outbound.items.OutboundQueue`, which sends each
  once at its time through the leased work of :mod:`omnichannel.leases`.

The channels' delivery (the web chat's live push, SMS/WhatsApp through
:class:`omnichannel.sms_sender.SmsSender`, a VAPI outbound call) plugs in per item kind.
"""
