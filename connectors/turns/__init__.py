"""A customer's turn, the same for every channel: run through Rasa with every failure reaching
the channel (:mod:`~connectors.turns.run`), and processed at most once whichever replica runs it,
replaying the replies the event log already holds (:mod:`~connectors.turns.once`). Each channel's
``turns.py`` (``vapi/``, ``twilio_sms/``, ``webchat/``) runs its durable turns with them.
"""
