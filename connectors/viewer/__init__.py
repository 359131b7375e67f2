"""The conversation viewer: designers and support staff find a conversation by phone number,
site user id or conversation id and read its whole cross-channel timeline.

Where to look (the page and its API are described in docs/DESIGNERS.md, "Conversation viewer"):

- ``wire.py``: the request body (one search, a page of events) and its checks. No Sanic.
- ``auth.py``: the Rasa auth token as a Bearer token. No Sanic.
- ``timeline.py``: stored events as timeline entries, bot messages as each channel rendered
  them, phone numbers masked. Pure.
- ``lookup.py``: identity and the tracker store's event log read for one page.
- ``channel.py``: the Rasa input channel, its credentials.yml options and its routes.
- ``static/``: the page (``index.html``, ``viewer.js``, ``viewer.css``).
"""
