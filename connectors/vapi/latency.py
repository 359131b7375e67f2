"""Server-side timings of the last turns, for ``GET /webhooks/vapi/stats`` (monitoring and the
benchmark): when the first words left, time in Rasa (lock + processor, what
``agent.handle_message`` does) and the time the connector added around it."""

from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, Tuple


class LatencyLog:
    KEPT = 1000

    def __init__(self) -> None:
        self._turns: Deque[Tuple[float, float, float]] = deque(maxlen=self.KEPT)

    def add(self, first_speech: float, rasa: float, total: float) -> None:
        self._turns.append((first_speech * 1000, rasa * 1000, (total - rasa) * 1000))

    def summary(self) -> Dict[str, Any]:
        turns = list(self._turns)
        return {
            "turns": len(turns),
            "first_speech_ms": [round(t[0], 3) for t in turns],
            "rasa_ms": [round(t[1], 3) for t in turns],
            "added_ms": [round(t[2], 3) for t in turns],
        }
