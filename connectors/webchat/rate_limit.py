"""Per-socket rate limit: a client gets a burst of frames, then a steady rate."""

from __future__ import annotations

import time


class TokenBucket:
    """``burst`` frames at once, refilled at ``rate`` per second."""

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = float(burst)
        self.rate = float(rate)
        self._tokens = float(burst)
        self._updated = time.monotonic()

    def take(self) -> float:
        """0 when a frame may pass, else the seconds until one may."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate
