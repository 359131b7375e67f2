"""The pieces of the event-log tracker store (:mod:`connectors.tracker_store`), each on its own:

- ``events.py``: events as the log holds them: serialised once, parsed without Rasa's search
  through every event class, and matched against a tracker's (which of them the log lacks);
- ``window.py``: the bounded tracker: where the window of the last user turns starts, and the
  events that carry the state of the turns before it;
- ``cache.py``: this process's copies of conversations' last sessions, and where each tracker
  it handed out stands in the log;
- ``reading.py``: the paged reads others make of a conversation's log (the web chat's history,
  the viewer's timeline): the store under Rasa's wrappers, and the channel a bot event answered.
"""
