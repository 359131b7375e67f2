"""Where a busy Rasa process spends its CPU: py-spy samples of it, summed into shares.

``python -m bench.bench_throughput --profile DIR`` records every level of ours with py-spy
(https://github.com/benfred/py-spy, a sampling profiler that reads another process's Python
stacks; not a dependency of the project: ``pip install py-spy`` where you profile) and prints,
per level, how much of the time the process was busy and the share of its busy samples in
each part of a turn below. Shares nest (the tracker store's share holds its Redis calls); the
samples in none of them are the rest (Sanic, asyncio, the connectors). The raw stacks stay in
DIR (one ``<side>-<shape>-<customers>.txt`` per level, py-spy's "raw" format: a stack per line,
its sample count last), for a flame graph (``flamegraph.pl``, speedscope) or another grouping.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

#: Parts of a turn, each the frames whose presence in a stack puts its samples in the part (as
#: py-spy prints a frame: the function, then its file relative to sys.path).
PARTS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("NLU (parse_message)", ("parse_message (",)),
    ("policies (_predict_next_with_tracker)", ("_predict_next_with_tracker (",)),
    ("  featurising states (states_for_tracker_history)", ("states_for_tracker_history (",)),
    ("actions (_run_action)", ("_run_action (",)),
    ("tracker store", ("connectors/tracker_store.py", "connectors/event_log/")),
    ("lock store", ("connectors/lock_store.py",)),
    ("Redis client (redis/)", ("(redis/",)),
    ("JSON (json/)", ("(json/",)),
    ("logging", ("(logging/__init__.py",)),
)
REST = "the rest (Sanic, asyncio, the connectors)"


def available() -> bool:
    return shutil.which("py-spy") is not None


def record(pid: int, path: Path, seconds: float) -> subprocess.Popen:
    """Samples ``pid`` for ``seconds`` (100 a second, without pausing it) into ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "100",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


#: The innermost Python frame of a sample taken while the event loop waits in uvloop's native
#: code (py-spy counts it as running: it sees no Python frame of the wait itself).
IDLE_LEAF = "serve (sanic/server/runners.py:"


@dataclass
class Shares:
    samples: int
    busy: int
    #: Each part's share of the busy samples.
    parts: Dict[str, float]


def shares(path: Path) -> Shares:
    """The samples in a raw profile, the busy ones, and each part's share of those."""
    total = busy = 0
    counts = dict.fromkeys([name for name, _ in PARTS] + [REST], 0)
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        if stack.rpartition(";")[2].startswith(IDLE_LEAF):
            continue
        busy += samples
        found = [name for name, frames in PARTS if any(frame in stack for frame in frames)]
        for name in found or [REST]:
            counts[name] += samples
    return Shares(total, busy, {name: n / busy if busy else 0.0 for name, n in counts.items()})


def summary(path: Path, label: str) -> Optional[str]:
    """The shares of one profile as lines of a report; None when py-spy wrote nothing."""
    if not path.exists():
        return None
    found = shares(path)
    busy = found.busy / found.samples if found.samples else 0.0
    lines = [f"profile of {label}: busy in {busy:.0%} of {found.samples} samples ({path})"]
    lines += [f"  {share:>6.1%}  {name}" for name, share in found.parts.items()]
    return "\n".join(lines)
