"""The one place that decides how a reply looks and sounds on each channel.

- ``messages``: :class:`BotMessage` (Rasa's message dict, parsed once) and markdown stripping;
- ``voice``: speech for a caller (no markdown, emoji or URLs; numbers and dates as said);
- ``sms``: SMS bodies (GSM-7, segments, numbered options, MMS media);
- ``chat``: the web chat's rich form (markdown as safe HTML, buttons, media);
- ``styles``: each channel's hard limits for text actions compose (the LLM's answer, an order's
  status), held by :func:`~omnichannel.rendering.styles.fit`, and dates as each channel reads them.

Designers' ``channel:`` response variations are chosen by Rasa before a message gets here (by
the output channel's ``name()``); rendering still applies to whatever they wrote.
"""
