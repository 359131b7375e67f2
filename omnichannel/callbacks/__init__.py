"""Callbacks by phone, the core half (no Rasa): when a customer wants the call
(``times.py``) and each callback's record and transitions in Redis (``store.py``).

The call itself is placed by the VAPI channel (``connectors/vapi/callbacks.py``), and the words
customers use to ask for, move and cancel one are in ``actions/callbacks.py``.
"""
