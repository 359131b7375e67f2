"""VAPI connector latency, next to Rasa's stock REST channel on the same stack.

One stack (fresh Redis, action server, the trained model, a local fake LLM) serves both. The
caller is the simulator's VapiCall (the ``openai`` SDK's streaming client, as VAPI uses):

- rule-based turns: time to the first content chunk and to ``[DONE]``, against the stock REST
  channel's round trip for the same script; the connector's own cost is read from the server's
  Prometheus exporter (``METRICS_PORT``): the ``omnichannel_voice_turn_part_seconds`` histograms
  (request-to-end time minus what ``agent.handle_message`` does, lock + processor), their
  median and p95 estimated from the buckets' increase over the measured turns as Prometheus's
  ``histogram_quantile`` does. Target: <= 5 ms median added.
- slow turns: a 2 s LLM action behind the voice filler (nlu_fallback -> "One moment." ->
  action_llm_fallback): time to the first content chunk. Target: <= 300 ms median.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
import time
import urllib.request
from typing import Dict, List

from prometheus_client.parser import text_string_to_metric_families

from bench.bench_turns import SCRIPT
from bench.setup import bench_setup
from testkit.fake_llm import FakeLlm, LlmReply
from testkit.processes import free_port
from testkit.stack import RasaStack, with_rest_channel
from testkit.vapi_call import VapiCall

CALLS = 10
SLOW_TURNS = 6
SLOW_ACTION_SECONDS = 2.0
GIBBERISH = "zxqv blorft wibble"
TARGET_ADDED_MS = 5.0
TARGET_SLOW_FIRST_CHUNK_MS = 300.0


def _percentile(values: List[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))]


def _row(label: str, values: List[float], note: str = "") -> str:
    return _figures(label, statistics.median(values), _percentile(values, 0.95), note)


def _figures(label: str, median: float, p95: float, note: str = "") -> str:
    return f"  {label:<46} {median:>9.1f} {p95:>9.1f}  {note}"


def _rest_turn(base_url: str, sender: str, text: str) -> float:
    request = urllib.request.Request(
        f"{base_url}/webhooks/rest/webhook",
        data=json.dumps({"sender": sender, "message": text}).encode(),
        headers={"Content-Type": "application/json"},
    )
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=30) as response:
        if not json.load(response):
            raise RuntimeError(f"REST channel: no reply to {text!r}")
    return (time.perf_counter() - began) * 1000


#: The server-side histogram of a voice turn's parts (omnichannel/metrics.py).
PARTS_HISTOGRAM = "omnichannel_voice_turn_part_seconds"

#: Cumulative bucket counts of one histogram series: upper bound (s) -> count.
Buckets = Dict[float, float]


def _part_buckets(stack: RasaStack) -> Dict[str, Buckets]:
    """The server's voice turn part histograms, by part, as its ``/metrics`` shows them now."""
    url = f"http://127.0.0.1:{stack.env['METRICS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    parts: Dict[str, Buckets] = {}
    for family in text_string_to_metric_families(text):
        if family.name != PARTS_HISTOGRAM:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                parts.setdefault(sample.labels["part"], {})[bound] = sample.value
    return parts


def _quantile_ms(before: Buckets, after: Buckets, share: float) -> float:
    """The ``share`` quantile (ms) of what was observed between the two scrapes, interpolated
    within its bucket as Prometheus's ``histogram_quantile`` does."""
    bounds = sorted(after)
    counts = [after[bound] - before.get(bound, 0.0) for bound in bounds]
    rank = share * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank and count > below:
            if math.isinf(bound):
                return lower * 1000
            return (lower + (bound - lower) * (rank - below) / (count - below)) * 1000
        lower, below = bound, count
    return lower * 1000


def _number(index: int) -> str:
    return f"+1415555{index:04d}"


async def _calls(stack: RasaStack, numbers: List[str], script: tuple) -> Dict[str, List[float]]:
    first: List[float] = []
    done: List[float] = []
    for number in numbers:
        call = VapiCall(stack.base_url, stack.env["VAPI_SERVER_SECRET"], number=number)
        for text in script:
            reply = await call.say(text)
            if reply.first_content_seconds is None or reply.finish_reason != "stop":
                raise RuntimeError(f"VAPI: no speech for {text!r}")
            first.append(reply.first_content_seconds * 1000)
            done.append(reply.done_seconds * 1000)
        await call.aclose()
    return {"first": first, "done": done}


def main() -> int:
    with bench_setup() as setup:
        fake_llm = setup.keep(FakeLlm().start())
        stack = setup.rasa(
            with_rest_channel(setup.work),
            OPENAI_BASE_URL=fake_llm.base_url,
            OPENAI_API_KEY="sk-local-fake",
            LLM_MODEL="fake-model",
            METRICS_PORT=str(free_port()),
        )
        stack.start()
        # Warm-up: first turns load lazily-built parts (NLU caches, action server imports).
        asyncio.run(_calls(stack, [_number(9000)], SCRIPT))
        for text in SCRIPT:
            _rest_turn(stack.base_url, "c_benchwarm", text)
        warm = _part_buckets(stack)

        voice = asyncio.run(_calls(stack, [_number(i) for i in range(CALLS)], SCRIPT))
        server = _part_buckets(stack)
        rasa_ms = [_quantile_ms(warm["rasa"], server["rasa"], q) for q in (0.5, 0.95)]
        added_ms = [_quantile_ms(warm["connector"], server["connector"], q) for q in (0.5, 0.95)]
        rest = [
            _rest_turn(stack.base_url, f"c_benchrest{call}", text)
            for call in range(CALLS)
            for text in SCRIPT
        ]

        fake_llm.default = LlmReply(content="Here is what I found.", delay=SLOW_ACTION_SECONDS)
        slow = asyncio.run(
            _calls(stack, [_number(100 + i) for i in range(SLOW_TURNS)], (GIBBERISH,))
        )
        slow_rest = [_rest_turn(stack.base_url, f"c_benchslow{i}", GIBBERISH) for i in range(2)]

    added = added_ms[0]
    slow_first = statistics.median(slow["first"])
    ratio = statistics.median(voice["done"]) / statistics.median(rest)
    print(f"{'':48} {'median':>9} {'p95':>9}   (ms)")
    print(f"Rule-based turns, n={len(voice['first'])} (VAPI) / {len(rest)} (stock REST)")
    print(_row("VAPI: first content chunk (client)", voice["first"]))
    print(_row("VAPI: [DONE] (client)", voice["done"], f"x{ratio:.2f} of stock REST"))
    print(_row("stock REST channel: round trip (client)", rest))
    rasa_label = "server: Rasa's handle_message (lock+processor)"
    print(_figures(rasa_label, rasa_ms[0], rasa_ms[1], "(histogram)"))
    print(
        _figures(
            "server: added by the VAPI connector",
            added_ms[0],
            added_ms[1],
            f"(histogram) target <= {TARGET_ADDED_MS:g} ms median",
        )
    )
    print(f"Slow turns: {SLOW_ACTION_SECONDS:g} s LLM action behind a filler, n={SLOW_TURNS}")
    print(
        _row(
            "VAPI: first content chunk (the filler)",
            slow["first"],
            f"target <= {TARGET_SLOW_FIRST_CHUNK_MS:g} ms median",
        )
    )
    print(_row("VAPI: [DONE]", slow["done"]))
    print(_row("stock REST channel: first (= whole) answer", slow_rest))
    missed = []
    if added > TARGET_ADDED_MS:
        missed.append(f"connector adds {added:.1f} ms median (target {TARGET_ADDED_MS:g})")
    if slow_first > TARGET_SLOW_FIRST_CHUNK_MS:
        missed.append(f"slow-turn first chunk {slow_first:.0f} ms median")
    for line in missed:
        print(f"TARGET MISSED: {line}")
    return 1 if missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
