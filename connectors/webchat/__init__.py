"""Web chat: an authenticated WebSocket, cross-channel history and live fan-out, and its widget.

Rasa's stock ``socketio`` channel keys a chat by its socket id (a new conversation on every
reconnect), lets any client claim any session id when sessions persist, and cannot reach a tab
served by another replica. This channel keys the chat by the conversation identity resolves for
the signed-in customer, so the chat shows (and continues) what they said on the phone and by
SMS, and it pushes every new turn of that conversation, whichever channel or replica handled
it, to every open tab through the tracker store's Redis publish on ``omni:{<cid>}:live``.

Where to look (the protocol itself is documented in docs/INTEGRATORS.md, "Web chat protocol"):

- ``auth.py``: who a token says the client is (host-site JWTs, anonymous tokens, the demo link).
- ``wire.py``: the wire format: client frames and their parser, server frames, error and
  close codes. No Sanic, no Rasa.
- ``history.py``: stored events as chat messages, and the history pages.
  How a bot message's text, buttons and HTML look is ``omnichannel/rendering/chat.py``.
- ``live.py``: channel state that moves: the Redis pub/sub fan-out to open sockets.
- ``state.py``: the chat's state in Redis: session limits (anonymous tokens minted, sockets per
  session, revoked tokens) and the per-session rate limit.
- ``connection.py``: one socket's life (auth, history, frames, turns, live feed) and the
  output channel a turn's replies go through.
- ``turns.py``: accepted messages as durable in-flight work (:mod:`connectors.turns.durable`):
  recorded before the ``ack``, held by the socket until done, run once (``run_once``), taken
  over by another replica if this one dies.
- ``channel.py``: the Rasa input channel, its credentials.yml options and its routes.
- ``static/``: the widget (``widget.js``, ``widget.css``) and the page that hosts it.
"""
