"""Whole-stack figures: a Rasa server's start (ready time, memory, CPU), ours against `rasa run`,
and per-turn time over Rasa's REST channel.

Both servers load the same model with the same credentials and endpoints; ours is started as
the image and `make run` start it (`python -m connectors.rasa_main run`, which leaves TensorFlow
unimported: connectors/rasa_light_start.py), the other with Rasa's own `rasa run`. Each is
started alone, after the action server is up: ready = from the process's start until the
readiness probe answers 200 (model loaded, Redis answering); resident memory and the process's
CPU seconds are read then.

Targets (exit 1 when missed; stretch goals of a replica, this machine): ours ready within
``READY_TARGET_SECONDS`` and resident within ``RESIDENT_TARGET_MB``. The ready time is wall
clock and the machine is shared: read it beside the CPU seconds and the load average.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from bench.figures import load_average, process_cpu_seconds, resident_mb
from bench.setup import BenchSetup, bench_setup
from testkit.processes import wait_for_port
from testkit.stack import RASA_ENTRY_POINT, with_rest_channel

TURNS = 100
SCRIPT = (
    "hello",
    "where is my order",
    "12345",
    "what's the tracking number",
    "what's your refund policy",
    "thanks",
)
READY_TARGET_SECONDS = 5.0
RESIDENT_TARGET_MB = 300.0
START_TIMEOUT = 300.0


@dataclass
class Start:
    entry_point: str
    ready_seconds: float
    resident_mb: float
    cpu_seconds: float
    load: str


def _post(url: str, body: dict) -> list:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (OSError, urllib.error.HTTPError):
        return False


def measure_start(setup: BenchSetup, entry_point: str) -> Start:
    """Starts a server through ``entry_point`` and measures it until it is ready; stops it."""
    stack = setup.rasa(with_rest_channel(setup.work), name=entry_point.replace(".", "-"))
    stack.entry_point = entry_point
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    stack.start_actions()
    wait_for_port(stack.action_port, 60, stack.action_proc)
    began = time.monotonic()
    stack.start_rasa()
    assert stack.rasa_proc is not None
    probe = f"{stack.base_url}/webhooks/ops/readyz"
    while not _ready(probe):
        if stack.rasa_proc.poll() is not None or time.monotonic() - began > START_TIMEOUT:
            raise RuntimeError(f"{entry_point}: the server did not get ready\n{stack.rasa_log()}")
        time.sleep(0.05)
    ready = time.monotonic() - began
    pid = stack.rasa_proc.pid
    figures = Start(entry_point, ready, resident_mb(pid), process_cpu_seconds(pid), load_average())
    stack.stop()
    return figures


def main() -> int:
    with bench_setup() as setup:
        starts = [measure_start(setup, entry) for entry in (RASA_ENTRY_POINT, "rasa")]
        stack = setup.rasa(with_rest_channel(setup.work), name="turns")
        stack.start()
        url = f"{stack.base_url}/webhooks/rest/webhook"
        timings = []
        for turn in range(TURNS):
            sender = f"c_bench{turn // len(SCRIPT)}"
            text = SCRIPT[turn % len(SCRIPT)]
            began = time.perf_counter()
            replies = _post(url, {"sender": sender, "message": text})
            timings.append((time.perf_counter() - began) * 1000)
            if not replies:
                raise RuntimeError(f"no reply to {text!r}")
    timings.sort()
    print(f"{'server start':<38} {'ready s':>8} {'resident MB':>12} {'CPU s':>7}")
    for start in starts:
        is_ours = start.entry_point != "rasa"
        label = f"ours (python -m {start.entry_point})" if is_ours else "rasa run"
        print(
            f"{label:<38} {start.ready_seconds:>8.1f} {start.resident_mb:>12.0f} "
            f"{start.cpu_seconds:>7.1f}  ({start.load})"
        )
    ours, stock = starts
    ratios = (
        ours.ready_seconds / stock.ready_seconds,
        ours.resident_mb / stock.resident_mb,
        ours.cpu_seconds / stock.cpu_seconds,
    )
    print("ours / rasa run: ready {:.2f}, resident {:.2f}, CPU {:.2f}".format(*ratios))
    ok = True
    for label, value, target, unit in (
        ("ready", ours.ready_seconds, READY_TARGET_SECONDS, "s"),
        ("resident", ours.resident_mb, RESIDENT_TARGET_MB, "MB"),
    ):
        met = value <= target
        ok = ok and met
        print(
            f"ours {label}: {value:.1f} {unit} (stretch target <= {target:g} {unit}: "
            f"{'met' if met else 'MISSED'})"
        )
    print(
        f"REST turns: n={TURNS} median {statistics.median(timings):.1f} ms  "
        f"p95 {timings[int(TURNS * 0.95) - 1]:.1f} ms  max {timings[-1]:.1f} ms  ({load_average()})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
