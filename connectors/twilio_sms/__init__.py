"""Twilio SMS connector: customers text the assistant's number and land in their one conversation.

Where to look:

- (a) auth, the ``X-Twilio-Signature`` check and the public URL it is made against:
  :mod:`connectors.twilio_sms.auth`;
- (b) the wire format, what Twilio posts (messages, status callbacks, opt-out keywords) and the
  TwiML answer: :mod:`connectors.twilio_sms.wire`;
- (c) how a reply is rendered as SMS (length, buttons as "Reply 1 for …", GSM-7):
  :mod:`omnichannel.rendering.sms`; sending by REST: :mod:`omnichannel.sms_sender`;
- (d) channel state in Redis: accepted deliveries as durable in-flight work (their dedupe,
  takeover by another replica, drain hand-off): :mod:`connectors.twilio_sms.turns`; replies due
  by REST: :mod:`connectors.twilio_sms.outbox`; idempotency tokens and the options last
  offered: :mod:`connectors.twilio_sms.state`;
- (e) routes, options (credentials.yml) and the Rasa input/output channels:
  :mod:`connectors.twilio_sms.channel`.
"""
