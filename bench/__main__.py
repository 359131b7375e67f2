"""`make bench`: every benchmark, each against the stock Rasa part it replaces, in one run."""

from __future__ import annotations

import importlib
import sys
import time

BENCHMARKS = (
    "bench.bench_tracker_store",
    "bench.bench_lock_store",
    "bench.bench_live_fanout",
    "bench.bench_twilio",
    "bench.bench_vapi",
    "bench.bench_webchat",
    "bench.bench_turns",
    "bench.bench_tracing",
    "bench.bench_flat_turns",
    "bench.bench_throughput",
)


def main() -> int:
    failed = []
    for name in BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        started = time.monotonic()
        module = importlib.import_module(name)
        result = module.main()
        print(f"({name} took {time.monotonic() - started:.0f} s)", flush=True)
        if result:
            failed.append(name)
    if failed:
        print("\nTargets missed in: " + ", ".join(failed))
        return 1
    print("\nAll benchmark targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
