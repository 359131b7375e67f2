"""Per-turn tracker-store cost against conversation length: ours vs Rasa's RedisTrackerStore.

A turn is what Rasa's processor does to the store for one user message: ``retrieve`` the
tracker, add the turn's events (user uttered, action, bot uttered, action_listen), ``save``.
Only the two store calls are timed. Both stores talk to the same real redis-server, started
here; ours is also measured on a local Redis Cluster of 3 primaries, started here too, and shown
in the same table (Rasa's store cannot run on a cluster). Conversations are one long session
(designers keep sessions long so context survives a channel switch), with or without metadata
on the session's first message.

Ours: 15 conversations per cell, each pre-built to N turns with one save, then one untimed
turn (this process's first read of it: the "first read" column) and one timed turn; the
median is reported. "2 replicas": the turn before the timed one was taken by another store
instance, so the timed read has to catch up with it. Rasa's store: one conversation pre-built
the same way, a few timed turns; lengths whose projected time per turn (power law through the
two previous lengths) exceeds the budget are not run, and the projection is shown instead.

Run: ``python -m bench.bench_tracker_store`` (``make bench`` runs it with the others).
"""

from __future__ import annotations

import asyncio
import logging
import math
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from rasa.core.tracker_store import RedisTrackerStore, TrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    Event,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker

from connectors.tracker_store import RedisEventLogTrackerStore
from testkit.processes import RedisServer
from testkit.redis_topologies import RedisClusterProcesses

LENGTHS = (10, 100, 150, 500, 1000)
OURS_CONVERSATIONS = 15
STOCK_TURNS = 3
#: Rasa's store is not run at a length where one turn is projected to take longer than this.
STOCK_TURN_BUDGET_S = 8.0
FLAT_FACTOR = 2.0
SPEEDUP_TARGET = 20.0
SPEEDUP_LENGTH = 150

DOMAIN = Domain.from_yaml(
    """
version: "3.1"
intents: [greet, track_order, request_refund, goodbye, affirm, deny, thank, human_handoff,
  opt_out, nlu_fallback]
slots:
  order_id: {type: text, influence_conversation: false, mappings: [{type: custom}]}
  channel: {type: text, influence_conversation: false, mappings: [{type: custom}]}
responses:
  utter_order_status: [{text: "Order {order_id} is on its way."}]
"""
)
INTENTS = DOMAIN.intents

FIRST_MESSAGE_METADATA = {
    "channel": "voice",
    "address": "tel:+1415555••••",
    "call_id": "9b1f4e0c-7d2a-4c55-9a43-6d3c0f1e2a77",
    "assistant_id": "asst_5f0a9e",
    "customer": {"name": "Dana", "number_masked": "+1415555••••", "verified": True},
    "locale": "en-US",
    "client": {"user_agent": "VAPI/1.0", "ip_masked": "203.0.113.x"},
}


def session_start(with_metadata: bool) -> List[Event]:
    """Session start as Rasa's processor logs it: with metadata on the first message it sets
    ``session_started_metadata`` just before ``action_session_start``, and the action carries
    the slot over into the new session."""
    if not with_metadata:
        return [
            ActionExecuted("action_session_start"),
            SessionStarted(),
            ActionExecuted("action_listen"),
        ]
    return [
        SlotSet("session_started_metadata", FIRST_MESSAGE_METADATA),
        ActionExecuted("action_session_start"),
        SessionStarted(),
        SlotSet("session_started_metadata", FIRST_MESSAGE_METADATA),
        ActionExecuted("action_listen"),
    ]


def turn(number: int, with_metadata: bool = False) -> List[Event]:
    """One turn as Rasa logs it, with the parse data a DIET pipeline produces."""
    text = f"where is my order {number:06d}, it was due yesterday"
    ranking = [
        {"name": name, "confidence": round(0.9 / (rank + 1), 4)}
        for rank, name in enumerate(INTENTS[:10])
    ]
    entities = [
        {
            "entity": "order_id",
            "value": f"{number:06d}",
            "start": 18,
            "end": 24,
            "extractor": "DIETClassifier",
            "confidence_entity": 0.97,
        }
    ]
    return [
        UserUttered(
            text,
            intent={"name": "track_order", "confidence": 0.9},
            entities=entities,
            parse_data={  # type: ignore[arg-type]  # the fields a parse carries, not all of them
                "text": text,
                "intent": {"name": "track_order", "confidence": 0.9},
                "entities": entities,
                "intent_ranking": ranking,
                "response_selector": {"all_retrieval_intents": [], "default": {}},
            },
            input_channel="vapi",
            message_id=uuid.uuid4().hex,
            metadata=FIRST_MESSAGE_METADATA if with_metadata else None,
        ),
        ActionExecuted("utter_order_status", policy="TEDPolicy", confidence=0.96),
        BotUttered(
            f"Order {number:06d} left the depot this morning and arrives tomorrow.",
            data={"elements": None, "quick_replies": None, "buttons": None, "custom": None},
            metadata={"utter_action": "utter_order_status"},
        ),
        ActionExecuted("action_listen", policy="RulePolicy", confidence=1.0),
    ]


def conversation_events(turns: int, with_metadata: bool) -> List[Event]:
    events = session_start(with_metadata)
    for number in range(turns):
        events.extend(turn(number, with_metadata and number == 0))
    return events


def prebuilt(store: TrackerStore, cid: str, events: List[Event]) -> DialogueStateTracker:
    return DialogueStateTracker.from_events(cid, events, store.domain.slots)


async def timed_turn(store: TrackerStore, cid: str, number: int) -> float:
    """Seconds spent in the store's retrieve and save for one turn."""
    new_events = turn(number)
    started = time.perf_counter()
    tracker = await store.retrieve(cid)
    retrieved = time.perf_counter()
    assert tracker is not None  # the conversation was seeded before the first measured turn
    for event in new_events:
        tracker.update(event)
    updated = time.perf_counter()
    await store.save(tracker)
    return (retrieved - started) + (time.perf_counter() - updated)


@dataclass
class OursResult:
    warm_s: float
    two_replicas_s: float
    first_read_s: float


async def measure_ours(url: str, turns: int, with_metadata: bool) -> OursResult:
    replica_a = RedisEventLogTrackerStore(DOMAIN, host=url)
    replica_b = RedisEventLogTrackerStore(DOMAIN, host=url)
    events = conversation_events(turns, with_metadata)
    warm, two_replicas, first_read = [], [], []
    for _ in range(OURS_CONVERSATIONS):
        cid = f"c_bench_{uuid.uuid4().hex[:12]}"
        await replica_a.save(prebuilt(replica_a, cid, events))
        started = time.perf_counter()
        await replica_a.retrieve(cid)
        first_read.append(time.perf_counter() - started)
        await timed_turn(replica_a, cid, turns)
        warm.append(await timed_turn(replica_a, cid, turns + 1))
        await timed_turn(replica_b, cid, turns + 2)
        two_replicas.append(await timed_turn(replica_a, cid, turns + 3))
    return OursResult(
        warm_s=statistics.median(warm),
        two_replicas_s=statistics.median(two_replicas),
        first_read_s=statistics.median(first_read),
    )


async def measure_stock(port: int, turns: int, with_metadata: bool) -> float:
    store = RedisTrackerStore(DOMAIN, host="127.0.0.1", port=port)
    cid = f"c_stock_{uuid.uuid4().hex[:12]}"
    await store.save(prebuilt(store, cid, conversation_events(turns, with_metadata)))
    times = [await timed_turn(store, cid, turns)]
    while len(times) < STOCK_TURNS and sum(times) < STOCK_TURN_BUDGET_S / 2:
        times.append(await timed_turn(store, cid, turns + len(times)))
    return statistics.median(times)


def projected(measured: Dict[int, float], turns: int) -> Optional[float]:
    """Power-law projection through the two longest measured lengths."""
    if len(measured) < 2:
        return None
    (n1, t1), (n2, t2) = sorted(measured.items())[-2:]
    exponent = math.log(t2 / t1) / math.log(n2 / n1)
    return t2 * (turns / n2) ** max(exponent, 1.0)


@dataclass
class Row:
    turns: int
    ours: OursResult
    cluster: OursResult
    stock_s: Optional[float]
    stock_projection_s: Optional[float]


async def run_variant(
    redis: RedisServer, cluster: RedisClusterProcesses, with_metadata: bool
) -> List[Row]:
    rows = []
    stock_measured: Dict[int, float] = {}
    for turns in LENGTHS:
        ours = await measure_ours(redis.url, turns, with_metadata)
        on_cluster = await measure_ours(cluster.url, turns, with_metadata)
        projection = projected(stock_measured, turns)
        stock = None
        if projection is None or projection <= STOCK_TURN_BUDGET_S:
            stock = await measure_stock(redis.port, turns, with_metadata)
            stock_measured[turns] = stock
        rows.append(Row(turns, ours, on_cluster, stock, None if stock is not None else projection))
        print(
            f"  measured {turns} turns ({'with' if with_metadata else 'no'} metadata)", flush=True
        )
    return rows


def ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def print_table(title: str, rows: List[Row]) -> None:
    print(f"\n{title}")
    header = (
        f"{'turns':>6} {'ours ms':>9} {'2 replicas':>11} {'first read':>11} "
        f"{'cluster ms':>11} {'cl. 2 repl.':>12} {'rasa ms':>10} {'rasa/ours':>10} "
        f"{'ours vs 10':>11}"
    )
    print(header)
    print("-" * len(header))
    base = rows[0].ours.warm_s
    for row in rows:
        if row.stock_s is not None:
            stock, ratio = ms(row.stock_s), f"{row.stock_s / row.ours.warm_s:.0f}x"
        else:
            projection = row.stock_projection_s
            stock = f"~{projection:.0f} s*" if projection else "-"
            ratio = f"~{projection / row.ours.warm_s:.0f}x*" if projection else "-"
        print(
            f"{row.turns:>6} {ms(row.ours.warm_s):>9} {ms(row.ours.two_replicas_s):>11} "
            f"{ms(row.ours.first_read_s):>11} {ms(row.cluster.warm_s):>11} "
            f"{ms(row.cluster.two_replicas_s):>12} {stock:>10} {ratio:>10} "
            f"{row.ours.warm_s / base:>10.2f}x"
        )


async def run() -> int:
    logging.getLogger("rasa").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="bench-tracker-") as data_dir:
        redis = RedisServer(Path(data_dir) / "single").start()
        cluster = RedisClusterProcesses(Path(data_dir) / "cluster", primaries=3).start()
        try:
            # One untimed cell per deployment first: the first turns open the connections (one
            # per node on the cluster) and load the scripts, which no later turn pays for.
            for url in (redis.url, cluster.url):
                await measure_ours(url, LENGTHS[0], with_metadata=False)
            started = time.monotonic()
            plain = await run_variant(redis, cluster, with_metadata=False)
            with_metadata = await run_variant(redis, cluster, with_metadata=True)
            elapsed = time.monotonic() - started
        finally:
            redis.stop()
            cluster.stop()

    print_table("Per turn (retrieve + save), one session, no metadata", plain)
    print_table(
        "Per turn (retrieve + save), one session, metadata on its first message", with_metadata
    )
    print(
        "\n* not run: projected from the two previous lengths (budget "
        f"{STOCK_TURN_BUDGET_S:.0f} s per turn). 'first read': this process's first retrieve "
        "of the conversation (replays the whole session once). 'cluster': ours on a local "
        "Redis Cluster of 3 primaries (redis+cluster://), same run."
    )
    print(f"(measured in {elapsed:.0f} s)")

    checks: List[tuple[str, bool]] = []
    for name, rows in (("no metadata", plain), ("metadata", with_metadata)):
        first, last = rows[0], rows[-1]
        for label, cost in (
            ("", lambda row: row.ours.warm_s),
            (", 2 replicas", lambda row: row.ours.two_replicas_s),
            (", cluster", lambda row: row.cluster.warm_s),
            (", cluster, 2 replicas", lambda row: row.cluster.two_replicas_s),
        ):
            ratio = cost(last) / cost(first)
            checks.append(
                (
                    f"ours flat ({name}{label}): {last.turns} turns = {ratio:.2f}x "
                    f"the {first.turns}-turn cost (target <= {FLAT_FACTOR:.0f}x)",
                    ratio <= FLAT_FACTOR,
                )
            )
    at_target = next(row for row in with_metadata if row.turns == SPEEDUP_LENGTH)
    assert at_target.stock_s is not None  # measured at every length up to the stock limit
    speedup = at_target.stock_s / at_target.ours.warm_s
    checks.append(
        (
            f"ours {speedup:.0f}x faster than Rasa's RedisTrackerStore at {SPEEDUP_LENGTH} turns "
            f"with metadata (target >= {SPEEDUP_TARGET:.0f}x)",
            speedup >= SPEEDUP_TARGET,
        )
    )
    print()
    for text, met in checks:
        print(f"[{'MET' if met else 'MISSED'}] {text}")
    return 0 if all(met for _, met in checks) else 1


def main() -> int:
    return asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
