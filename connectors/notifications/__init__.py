"""Notifications from the shop's systems: an authenticated API that names a customer and a
response designers marked sendable, delivered once on the customer's channel (an open chat tab
at once, else SMS or WhatsApp, else queued for the chat), through the outbound core
(:mod:`omnichannel.outbound`)."""
