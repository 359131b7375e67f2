"""Figures the benchmarks report."""

from __future__ import annotations

from typing import Sequence

#: The part of a turn profile (bench/turn_profile.py) that holds the Rasa process's CPU time
#: over the turn: its wall-clock parts include waiting for a CPU on a loaded machine.
CPU_PART = "process CPU during the turn"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
