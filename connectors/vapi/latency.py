"""Server-side timings of the last turns: when the first words left, time in Rasa (lock +
processor, what ``agent.handle_message`` does) and the time the connector added around it.

``GET /webhooks/vapi/stats`` shows each of the last turns (the benchmark reads them there);
Prometheus gets the same as histograms that it can sum over the replicas."""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, Tuple

from omnichannel.metrics import VOICE_TURN_PART_SECONDS


class LatencyLog:
    KEPT = 1000

    def __init__(self) -> None:
        self._turns: Deque[Tuple[float, float, float]] = deque(maxlen=self.KEPT)

    def add(self, first_speech: float, rasa: float, total: float) -> None:
        """Keeps the turn for ``/stats`` and observes it in the Prometheus histograms."""
        self._turns.append((first_speech * 1000, rasa * 1000, (total - rasa) * 1000))
        VOICE_TURN_PART_SECONDS.labels(part="first_speech").observe(first_speech)
        VOICE_TURN_PART_SECONDS.labels(part="rasa").observe(rasa)
        VOICE_TURN_PART_SECONDS.labels(part="connector").observe(max(0.0, total - rasa))

    def summary(self) -> Dict[str, Any]:
        turns = list(self._turns)
        return {
            "turns": len(turns),
            "first_speech_ms": [round(t[0], 3) for t in turns],
            "rasa_ms": [round(t[1], 3) for t in turns],
            "added_ms": [round(t[2], 3) for t in turns],
        }
