"""A voice turn's server-side timings, as Prometheus histograms (fleet-wide figures are
Prometheus's sums over the replicas): when the first words left, time in Rasa (lock +
processor, what ``agent.handle_message`` does) and the time the connector added around it."""

from __future__ import annotations

from omnichannel.metrics import VOICE_TURN_PART_SECONDS


def observe_turn(first_speech: float, rasa: float, total: float) -> None:
    """One turn run here: seconds to its first words, in Rasa, and in all (request to end)."""
    VOICE_TURN_PART_SECONDS.labels(part="first_speech").observe(first_speech)
    VOICE_TURN_PART_SECONDS.labels(part="rasa").observe(rasa)
    VOICE_TURN_PART_SECONDS.labels(part="connector").observe(max(0.0, total - rasa))
