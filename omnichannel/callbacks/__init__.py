"""Callbacks by phone, the core half (no Rasa): when a customer wants the call
(``times.py``), a callback as an outbound item (``items.py``) and booking one, the path the
customer's request, the hand-off's offer and an agent's request share (``booking.py``).

The call itself is placed by the VAPI channel (``connectors/vapi/callbacks.py``), and the words
customers use to ask for, move and cancel one are in ``actions/callbacks.py``.
"""
