"""Figures the benchmarks report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

#: The part of a turn profile (bench/turn_profile.py) that holds the Rasa process's CPU time
#: over the turn: its wall-clock parts include waiting for a CPU on a loaded machine.
CPU_PART = "process CPU during the turn"


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def process_cpu_seconds(pid: Optional[int]) -> float:
    """CPU seconds of a process and its waited-for children (user + system), from /proc."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def resident_mb(pid: int) -> float:
    """A process's resident memory (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_average() -> str:
    """The machine's load average over 1, 5 and 15 minutes, to print beside every figure."""
    return "load " + "/".join(f"{value:.1f}" for value in os.getloadavg())
