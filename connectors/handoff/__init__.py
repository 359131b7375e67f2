"""Hand-off to a person, the Rasa half (the core half is ``omnichannel/handoff/``).

Where to look:

- ``bot.py``: the bot standing aside and coming back (Rasa's ``ConversationPaused`` /
  ``ConversationResumed``, appended under the conversation's lock) and what it says meanwhile.
- ``turns.py``: a customer's turn while a hand-off is open (every channel's turn passes it).
- ``messages.py``: agents' replies and the hand-off's notices to the customer, as durable work.
- ``engine.py``: every change to a hand-off (claim, reply, note, hand back, resolve, withdraw,
  give up), the sweeper of waiting hand-offs, metrics, helpdesk syncs.
- ``desk.py``: the agent side as an interface (the embedded inbox, or a helpdesk).
- ``channel.py``: the ``handoff`` Rasa channel: options in credentials.yml, starts the engine.
"""
