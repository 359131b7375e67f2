"""Hand-off to a person, the core half (no Rasa): the state of one conversation's hand-off and
its transitions (``state.py``), the fleet's records in Redis with atomic claims (``store.py``),
the team's business hours (``hours.py``) and the rules of waiting (``policy.py``).

The Rasa half (the bot standing aside, agents' replies reaching the customer, the sweeper of
waiting hand-offs) is ``connectors/handoff/``; agents' pages are ``connectors/inbox/``.
"""
