"""Chatwoot as the agent desk: handed-off conversations mirrored into a Chatwoot API inbox,
agents answering there (docs/SUPPORT.md, "Chatwoot setup step by step").

Where to look:

- ``wire.py``: Chatwoot's webhook payloads, parsed (no Sanic, no Rasa).
- ``auth.py``: who may call the webhook (Chatwoot's HMAC signature, or a secret URL path).
- ``api.py``: the part of Chatwoot's Application API we call (contacts, conversations, messages).
- ``state.py``: the mirror's state in Redis (which Chatwoot conversation mirrors which hand-off,
  how far it is mirrored, deliveries already taken, notes due for agents).
- ``transcript.py``: what of the event log agents see in Chatwoot, and in what words.
- ``desk.py``: the mirror itself (an :class:`~connectors.handoff.desk.AgentDesk`).
- ``agent_actions.py``: what agents do in Chatwoot (replies, notes, assignment, resolving),
  carried out through the hand-off engine.
- ``channel.py``: the ``chatwoot`` Rasa channel: its options in credentials.yml and its webhook.
"""
