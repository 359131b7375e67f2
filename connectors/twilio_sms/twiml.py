"""TwiML answers to an incoming-message webhook, built with twilio-python's ``MessagingResponse``.

What the messages say and how they are cut is decided by :mod:`omnichannel.rendering.sms`; this
only wraps rendered :class:`SmsMessage` objects in the XML Twilio expects. No Sanic, no Rasa.
"""

from __future__ import annotations

from typing import Optional, Sequence

from twilio.twiml.messaging_response import MessagingResponse

from omnichannel.rendering.sms import SmsMessage


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
