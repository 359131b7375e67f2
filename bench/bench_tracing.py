"""What tracing costs a turn: the same SMS turns through two Rasa servers started side by side,
one exporting every span over OTLP/HTTP (to a local receiver, as to a collector), one with
tracing off (the default), taking turns so both see the same machine load.

Target: tracing on adds at most 1 ms to a turn. Measured two ways: the median turn's wall
time (what a customer waits; on a loaded machine it grows with everything else's load, since
tracing's work then queues behind the other processes) and the CPU time the Rasa server and the
action server spend per turn (what tracing costs, whatever the load). The target is checked on
the CPU time; both are printed. Also reported: what a span costs while tracing is off (a flag
test), in nanoseconds.
"""

from __future__ import annotations

import statistics
import time
import timeit
from typing import Dict, List

import httpx
import psutil  # type: ignore[import-untyped]

from bench.setup import bench_setup
from omnichannel import tracing
from testkit.fake_otlp import FakeOtlp
from testkit.phone_numbers import new_phone_number
from testkit.stack import RasaStack, with_rest_channel
from testkit.twilio_webhook import signed_sms

TURNS = 150
WARM_UP = 12
SCRIPT = ("hello", "where is my order", "12345", "what's your refund policy", "thanks")
TARGET_ADDED_MS = 1.0


def _turn(client: httpx.Client, stack: RasaStack, number: str, text: str) -> float:
    sms = signed_sms(stack.env, number, text)
    began = time.perf_counter()
    answer = client.post(stack.base_url + sms.path, data=sms.form, headers=sms.headers)
    elapsed = (time.perf_counter() - began) * 1000
    if answer.status_code != 200 or "<Message" not in answer.text:
        raise RuntimeError(f"no inline reply to {text!r}: {answer.status_code} {answer.text[:300]}")
    return elapsed


def _cpu_seconds(stack: RasaStack) -> float:
    """CPU time used so far by the stack's Rasa server and action server (and their children)."""
    total = 0.0
    for proc in (stack.rasa_proc, stack.action_proc):
        assert proc is not None, "the stack is not started"
        root = psutil.Process(proc.pid)
        for found in [root, *root.children(recursive=True)]:
            times = found.cpu_times()
            total += times.user + times.system
    return total


def main() -> int:
    off_span_ns = timeit.timeit(lambda: tracing.span("x").__enter__(), number=200_000) / 200_000
    timings: Dict[str, List[float]] = {"off": [], "on": []}
    cpu: Dict[str, float] = {}
    with bench_setup() as setup:
        otlp = setup.keep(FakeOtlp().start())
        credentials = with_rest_channel(setup.work)
        off = setup.rasa(credentials, name="off")
        on = setup.rasa(credentials, name="on", OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url)
        for stack in (off, on):
            stack.start()
        with httpx.Client(timeout=30) as client:
            numbers = {"off": new_phone_number(), "on": new_phone_number()}
            for turn in range(WARM_UP + TURNS):
                text = SCRIPT[turn % len(SCRIPT)]
                if turn % len(SCRIPT) == 0:
                    numbers = {"off": new_phone_number(), "on": new_phone_number()}
                # Alternate which goes first, so neither always follows the other.
                order = ("off", "on") if turn % 2 else ("on", "off")
                if turn == WARM_UP:
                    cpu = {"off": -_cpu_seconds(off), "on": -_cpu_seconds(on)}
                for name in order:
                    stack = off if name == "off" else on
                    elapsed = _turn(client, stack, numbers[name], text)
                    if turn >= WARM_UP:
                        timings[name].append(elapsed)
        time.sleep(6.0)  # the last batch of spans (exported every 5 s), its CPU counted
        cpu = {"off": cpu["off"] + _cpu_seconds(off), "on": cpu["on"] + _cpu_seconds(on)}
        spans = len(otlp.spans())
    medians = {name: statistics.median(values) for name, values in timings.items()}
    for name in ("off", "on"):
        values = sorted(timings[name])
        print(
            f"SMS turns, tracing {name:>3}: n={len(values)} median {medians[name]:.1f} ms  "
            f"p95 {values[int(len(values) * 0.95) - 1]:.1f} ms"
        )
    added = medians["on"] - medians["off"]
    per_turn = {name: seconds * 1000 / TURNS for name, seconds in cpu.items()}
    added_cpu = per_turn["on"] - per_turn["off"]
    print(
        f"CPU per turn (Rasa + action server): off {per_turn['off']:.2f} ms, "
        f"on {per_turn['on']:.2f} ms"
    )
    print(f"spans exported by the traced server: {spans} ({spans / (WARM_UP + TURNS):.0f} a turn)")
    print(f"a span while tracing is off: {off_span_ns * 1e9:.0f} ns")
    print(
        f"load average while measuring: {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} CPUs"
    )
    print(f"tracing on adds {added:+.2f} ms to the median turn's wall time")
    print(
        f"tracing on adds {added_cpu:+.2f} ms of CPU to a turn (target <= {TARGET_ADDED_MS:g} ms)"
    )
    if spans < WARM_UP + TURNS:
        print("the traced server exported fewer spans than turns: tracing was not on")
        return 1
    return 0 if added_cpu <= TARGET_ADDED_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
