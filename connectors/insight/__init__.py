"""The insight page: what customers need, over a period and per channel, for designers and
support leads (``wire.py``: the period asked for, the CSV and the training file; ``channel.py``:
the routes; ``static/``: the page, its script and the vendored Chart.js)."""
