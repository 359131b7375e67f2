"""What customers need, as figures: counted as events are stored, read by the insight page.

``facts.py`` turns the events one save appended into figures (pure); ``store.py`` keeps them in
Redis per day and reads a period back; ``recorder.py`` connects the two off the turn's path.
"""
