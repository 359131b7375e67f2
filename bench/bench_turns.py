"""Whole-stack figures: Rasa server start time and per-turn time over Rasa's REST channel.

Not a comparison with a stock part (there is none for the whole stack); it reports what a user
of `make run` gets: the trained model behind `rasa run`, our Redis stores, the action server.
"""

from __future__ import annotations

import json
import statistics
import time
import urllib.request

from bench.setup import bench_setup
from testkit.stack import with_rest_channel

TURNS = 100
SCRIPT = (
    "hello",
    "where is my order",
    "12345",
    "what's the tracking number",
    "what's your refund policy",
    "thanks",
)


def _post(url: str, body: dict) -> list:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def main() -> int:
    with bench_setup() as setup:
        stack = setup.rasa(with_rest_channel(setup.work))
        started = time.monotonic()
        stack.start()
        start_seconds = time.monotonic() - started
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
    print(f"stack start (action server + model load): {start_seconds:.1f} s")
    print(
        f"REST turns: n={TURNS} median {statistics.median(timings):.1f} ms  "
        f"p95 {timings[int(TURNS * 0.95) - 1]:.1f} ms  max {timings[-1]:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
