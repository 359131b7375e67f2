"""A Redis primary killed in the middle of a stream of turns, on a cluster and on Sentinel.

Two replica processes (as two Rasa servers behind a load balancer) each run one stream of turns
for every one of 30 conversations, the way Rasa's processor does: ``RedisFifoLockStore.lock()``,
then ``RedisEventLogTrackerStore.retrieve()``, a user message, an action and a bot message added,
``save()``. A throwaway deployment (never the session ones) with a 1 s node timeout / down-after
has a primary SIGKILLed mid-stream; the streams go on through the failover and for a while after.

Afterwards every conversation's event log is exact: each turn that returned normally is there
exactly once, after every turn that had returned before it began; a turn that raised
``StateUnavailable`` (the channels' apology) is there at most once; nothing is doubled, lost or
foreign. Each test runs twice, with two values of ``REDIS_RETRY_SECONDS``:

- 8 s, more than a failover takes (2-3 s with these timeouts): every turn succeeds, some after
  retrying, and none takes longer than the retry bound plus one socket timeout (the last
  attempt of the command that met the failover may wait that long) plus a margin;
- 1 s, less than a failover takes: turns caught by it fail loudly (the apology) and leave the
  logs exact. A turn whose lock release failed leaves its ticket to lapse, so turns queued
  behind it wait up to a lease (plus one recheck): that, not the retry bound, bounds them then.

Run as a module (``python -m tests.connectors.test_redis_failover URL NAME``) this file is one
replica process: it says ``ready`` on stdout, runs its streams from the ``go`` line on stdin to
the ``stop`` line, then prints what each turn did as JSON, with ``time.monotonic()`` stamps (one
clock for every process on Linux).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import logging
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import pytest
from rasa.core.lock_store import LockError
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, UserUttered

from connectors.lock_store import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_RECHECK_INTERVAL,
    RedisFifoLockStore,
)
from connectors.tracker_store import RedisEventLogTrackerStore
from omnichannel.redis_client import StateUnavailable, conversation_key
from testkit.processes import ROOT, RedisServer, python, stop
from testkit.redis_topologies import RedisClusterProcesses, RedisSentinelProcesses

CONVERSATIONS = 30
REPLICAS = ("replica-a", "replica-b")
#: REDIS_RETRY_SECONDS values: above and below what a failover with a 1 s node timeout takes.
RIDE_OUT_SECONDS = 8.0
GIVE_UP_SECONDS = 1.0
#: The client factory's socket timeout: the last attempt of a command may wait that long.
SOCKET_TIMEOUT_SECONDS = 5.0
MARGIN_SECONDS = 2.0
#: How long the streams run before the kill, and after the deployment reports a new primary.
BEFORE_KILL_SECONDS = 1.5
AFTER_FAILOVER_SECONDS = 2.0
FAILOVER_TIMEOUT_SECONDS = 15.0
#: Pause between one stream's turns (a customer's next message), so 60 streams do not
#: saturate the 2 cores the failure detector also needs.
TURN_PAUSE_SECONDS = (0.01, 0.04)

DOMAIN = Domain.from_yaml(
    """
version: "3.1"
intents: [greet]
responses:
  utter_answer: [{text: "Noted."}]
"""
)


def conversation_ids() -> List[str]:
    return [f"c_failover_{number:02d}" for number in range(CONVERSATIONS)]


# --- one replica process ---------------------------------------------------------------------


@dataclass
class TurnRecord:
    """What one turn did, as the replica process saw it."""

    conversation_id: str
    text: str
    outcome: str  # "ok", "unavailable" (StateUnavailable) or "lock" (LockError)
    started: float
    ended: float
    acquired: Optional[float] = None
    saved: Optional[float] = None
    #: Retries of this turn's commands after a transient error (the client factory's warnings).
    retries: int = 0
    lease_lost: bool = False
    error: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.started


#: The retry log lines of the turn running in the current task (see _RetryCounter).
_turn_retries: contextvars.ContextVar[List[str]] = contextvars.ContextVar("turn_retries")


class _RetryCounter(logging.Handler):
    """Counts the client factory's "retrying" warnings against the turn whose task logged them
    (the lock's lease keeper inherits the turn's context, so its retries count too)."""

    def emit(self, record: logging.LogRecord) -> None:
        retries = _turn_retries.get(None)
        if retries is not None and "retrying" in record.getMessage():
            retries.append(record.getMessage())


async def one_turn(
    lock_store: RedisFifoLockStore,
    tracker_store: RedisEventLogTrackerStore,
    conversation_id: str,
    text: str,
) -> TurnRecord:
    retries: List[str] = []
    _turn_retries.set(retries)
    record = TurnRecord(conversation_id, text, "ok", started=time.monotonic(), ended=0.0)
    try:
        async with lock_store.lock(conversation_id) as held:
            record.acquired = time.monotonic()
            tracker = await tracker_store.retrieve(conversation_id)
            tracker.update(UserUttered(text, intent={"name": "greet", "confidence": 1.0}))
            tracker.update(ActionExecuted("utter_answer"))
            tracker.update(BotUttered(f"answer to {text}"))
            await tracker_store.save(tracker)
            record.saved = time.monotonic()
            record.lease_lost = held.lease_lost
    except StateUnavailable as error:
        record.outcome, record.error = "unavailable", str(error)
    except LockError as error:
        record.outcome, record.error = "lock", f"{type(error).__name__}: {error}"
    record.ended = time.monotonic()
    record.retries = len(retries)
    return record


async def stream(
    name: str,
    conversation_id: str,
    lock_store: RedisFifoLockStore,
    tracker_store: RedisEventLogTrackerStore,
    stopping: asyncio.Event,
) -> List[TurnRecord]:
    records = []
    while not stopping.is_set():
        text = f"{conversation_id} {name} #{len(records)}"
        # Each turn in a task of its own, as Rasa handles each message: a fresh context.
        records.append(
            await asyncio.create_task(one_turn(lock_store, tracker_store, conversation_id, text))
        )
        await asyncio.sleep(random.uniform(*TURN_PAUSE_SECONDS))
    return records


async def replica_main(url: str, name: str) -> None:
    logging.getLogger("omnichannel.redis_client").addHandler(_RetryCounter())
    tracker_store = RedisEventLogTrackerStore(DOMAIN, host=url)
    lock_store = RedisFifoLockStore(url)
    print("ready", flush=True)
    assert await asyncio.to_thread(sys.stdin.readline) == "go\n"
    stopping = asyncio.Event()

    async def stop_when_told() -> None:
        await asyncio.to_thread(sys.stdin.readline)
        stopping.set()

    told = asyncio.create_task(stop_when_told())
    results = await asyncio.gather(
        *(stream(name, cid, lock_store, tracker_store, stopping) for cid in conversation_ids())
    )
    await told
    print(json.dumps([asdict(record) for per_stream in results for record in per_stream]))


# --- checking the logs -----------------------------------------------------------------------


@dataclass
class LogCheck:
    """Everything wrong with the event logs, by kind; all empty when the logs are exact."""

    malformed: List[str] = field(default_factory=list)
    doubled: List[str] = field(default_factory=list)
    foreign: List[str] = field(default_factory=list)
    lost: List[str] = field(default_factory=list)
    out_of_order: List[str] = field(default_factory=list)
    #: Failed turns whose events were stored anyway (allowed, at most once each).
    failed_but_stored: int = 0

    def problems(self) -> Dict[str, List[str]]:
        kinds = ("malformed", "doubled", "foreign", "lost", "out_of_order")
        return {kind: getattr(self, kind) for kind in kinds if getattr(self, kind)}


def logged_turns(conversation_id: str, log: Sequence[dict], check: LogCheck) -> List[str]:
    """The user texts of the turns in one log, checking that the log is the session start
    followed by whole turns (user, action, bot) and nothing else."""
    if [event["event"] for event in log[:3]] != ["action", "session_started", "action"]:
        check.malformed.append(f"{conversation_id}: no session start at the head of the log")
    texts = []
    body = log[3:]
    for index in range(0, len(body), 3):
        chunk = body[index : index + 3]
        shape = [(event["event"], event.get("name")) for event in chunk]
        if shape != [("user", None), ("action", "utter_answer"), ("bot", None)] or chunk[2][
            "text"
        ] != "answer to " + str(chunk[0]["text"]):
            check.malformed.append(f"{conversation_id}: not a whole turn at {index + 3}: {shape}")
            continue
        texts.append(chunk[0]["text"])
    return texts


def check_logs(logs: Dict[str, List[dict]], turns: Sequence[TurnRecord]) -> LogCheck:
    check = LogCheck()
    by_text = {turn.text: turn for turn in turns}
    for conversation_id, log in logs.items():
        texts = logged_turns(conversation_id, log, check)
        counts = Counter(texts)
        check.doubled += [text for text, count in counts.items() if count > 1]
        check.foreign += [text for text in counts if text not in by_text]
        mine = [turn for turn in turns if turn.conversation_id == conversation_id]
        check.lost += [t.text for t in mine if t.outcome == "ok" and t.text not in counts]
        check.failed_but_stored += sum(1 for t in mine if t.outcome != "ok" and t.text in counts)
        # A turn that returned before another began must come first in the log.
        latest_start = float("-inf")
        for text in texts:
            turn = by_text.get(text)
            if turn is None or turn.outcome != "ok":
                continue
            if turn.saved < latest_start:
                check.out_of_order.append(text)
            latest_start = max(latest_start, turn.acquired)
    return check


def lock_overlaps(turns: Sequence[TurnRecord]) -> int:
    """Pairs of successful turns of one conversation that held its lock at the same time."""
    overlaps = 0
    by_conversation: Dict[str, List[TurnRecord]] = {}
    for turn in turns:
        if turn.outcome == "ok":
            by_conversation.setdefault(turn.conversation_id, []).append(turn)
    for held in by_conversation.values():
        held.sort(key=lambda turn: turn.acquired)
        overlaps += sum(1 for a, b in zip(held, held[1:], strict=False) if b.acquired < a.saved)
    return overlaps


# --- the scenario ----------------------------------------------------------------------------


@dataclass
class FailoverRun:
    turns: List[TurnRecord]
    logs: Dict[str, List[dict]]
    killed_at: float
    failover_seconds: float
    on_victim: List[str]

    def summary(self, label: str) -> str:
        """The figures docs/OPERATORS.md quotes under "Production Redis"."""
        ok = [turn for turn in self.turns if turn.outcome == "ok"]
        after_retry = [turn for turn in ok if turn.retries]
        failed = Counter(turn.outcome for turn in self.turns if turn.outcome != "ok")
        longest = max(self.turns, key=lambda turn: turn.seconds)
        resumed = min(
            (
                f"{turn.saved - self.killed_at:.2f} s"
                for turn in ok
                if turn.conversation_id in self.on_victim and turn.started > self.killed_at
            ),
            default="never",
        )
        return (
            f"{label}: failover {self.failover_seconds:.2f} s (kill -> new primary agreed); "
            f"{len(self.turns)} turns, {len(ok)} ok ({len(after_retry)} after retrying), "
            f"failed {dict(failed) or 0}; longest turn {longest.seconds:.2f} s "
            f"({longest.outcome}, {longest.retries} retries); the killed primary's "
            f"{len(self.on_victim)} conversations served again {resumed} after the kill; "
            f"median turn {statistics.median(t.seconds for t in ok) * 1000:.1f} ms; "
            f"failed turns stored anyway {check_logs(self.logs, self.turns).failed_but_stored}; "
            f"leases lost {sum(turn.lease_lost for turn in self.turns)}; "
            f"lock overlaps {lock_overlaps(self.turns)}"
        )


def run_streams(
    url: str,
    directory: Path,
    kill: Callable[[], None],
    wait_for_failover: Callable[[], object],
    read_log: Callable[[str], List[dict]],
    on_victim: List[str],
) -> FailoverRun:
    """Seeds the conversations, runs the replica processes' streams, kills a primary after
    BEFORE_KILL_SECONDS, lets the streams run AFTER_FAILOVER_SECONDS past the failover, and
    collects what every turn did and every log holds."""
    seed = RedisEventLogTrackerStore(DOMAIN, host=url)

    async def seed_all() -> None:
        for cid in conversation_ids():
            tracker = seed.init_tracker(cid)
            for event in (
                ActionExecuted("action_session_start"),
                SessionStarted(),
                ActionExecuted("action_listen"),
            ):
                tracker.update(event)
            await seed.save(tracker)

    asyncio.run(seed_all())
    logs = {name: (directory / f"{name}.log").open("w") for name in REPLICAS}
    replicas = {
        name: subprocess.Popen(
            [python(), "-m", "tests.connectors.test_redis_failover", url, name],
            cwd=str(ROOT),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=logs[name],
            text=True,
            start_new_session=True,
        )
        for name in REPLICAS
    }

    def tell_all(line: str) -> None:
        for replica in replicas.values():
            replica.stdin.write(line + "\n")
            replica.stdin.flush()

    try:
        for name, replica in replicas.items():
            assert replica.stdout.readline() == "ready\n", (directory / f"{name}.log").read_text()
        tell_all("go")
        time.sleep(BEFORE_KILL_SECONDS)
        killed_at = time.monotonic()
        kill()
        wait_for_failover()
        failover_seconds = time.monotonic() - killed_at
        time.sleep(AFTER_FAILOVER_SECONDS)
        tell_all("stop")
        turns = []
        for name, replica in replicas.items():
            output, _ = replica.communicate(timeout=turn_bound(RIDE_OUT_SECONDS) + 10)
            assert replica.returncode == 0, (directory / f"{name}.log").read_text()[-3000:]
            turns += [TurnRecord(**record) for record in json.loads(output)]
    finally:
        for name, replica in replicas.items():
            stop(replica, timeout=5)
            logs[name].close()
    stored = {cid: read_log(cid) for cid in conversation_ids()}
    return FailoverRun(turns, stored, killed_at, failover_seconds, on_victim)


def turn_bound(retry_seconds: float) -> float:
    """The longest a turn may take through a failover (see the module docstring)."""
    lapse = DEFAULT_LEASE_SECONDS + DEFAULT_RECHECK_INTERVAL
    return max(retry_seconds + SOCKET_TIMEOUT_SECONDS, lapse) + MARGIN_SECONDS


def events_key(conversation_id: str) -> str:
    return conversation_key(conversation_id, "events")


def read_events(node: RedisServer, conversation_id: str) -> List[dict]:
    with node.admin_client() as client:
        return [json.loads(raw) for raw in client.lrange(events_key(conversation_id), 0, -1)]


def assert_exact_and_bounded(run: FailoverRun, retry_seconds: float) -> None:
    check = check_logs(run.logs, run.turns)
    assert not check.problems(), check.problems()
    assert len({turn.text for turn in run.turns}) == len(run.turns)
    slowest = max(run.turns, key=lambda turn: turn.seconds)
    assert slowest.seconds <= turn_bound(retry_seconds), slowest
    outcomes = Counter(turn.outcome for turn in run.turns)
    assert outcomes["lock"] == 0, "a turn got neither its state nor the apology"
    if retry_seconds == RIDE_OUT_SECONDS:
        assert outcomes["unavailable"] == 0, "the retries did not ride out the failover"
    else:
        assert outcomes["unavailable"] > 0, "no turn met the failover"
    assert any(turn.retries for turn in run.turns if turn.outcome == "ok")
    # The stream really crossed the failover: turns of the killed primary's conversations
    # ran before the kill and succeeded again after it.
    for before in (True, False):
        assert any(
            turn.outcome == "ok"
            and turn.conversation_id in run.on_victim
            and (turn.ended < run.killed_at) == before
            for turn in run.turns
        )


@pytest.fixture(
    params=[RIDE_OUT_SECONDS, GIVE_UP_SECONDS],
    ids=[f"retry-{RIDE_OUT_SECONDS:.0f}s", f"retry-{GIVE_UP_SECONDS:.0f}s"],
)
def retry_seconds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> float:
    """REDIS_RETRY_SECONDS for this process and the replica processes it starts."""
    monkeypatch.setenv("REDIS_RETRY_SECONDS", str(request.param))
    return request.param


def test_a_cluster_primary_killed_mid_stream(tmp_path: Path, retry_seconds: float) -> None:
    cluster = RedisClusterProcesses(
        tmp_path / "cluster", primaries=3, replicas=1, node_timeout_ms=1000
    ).start()
    try:
        victim = cluster.primary_for_key(events_key(conversation_ids()[0]))
        on_victim = [
            cid for cid in conversation_ids() if cluster.primary_for_key(events_key(cid)) is victim
        ]
        run = run_streams(
            cluster.url,
            tmp_path,
            kill=lambda: cluster.kill(victim),
            wait_for_failover=lambda: cluster.wait_for_failover(victim, FAILOVER_TIMEOUT_SECONDS),
            read_log=lambda cid: read_events(cluster.primary_for_key(events_key(cid)), cid),
            on_victim=on_victim,
        )
    finally:
        cluster.stop()
    print("\n" + run.summary(f"cluster, REDIS_RETRY_SECONDS={retry_seconds:g}"))
    assert_exact_and_bounded(run, retry_seconds)


def test_a_sentinel_master_killed_mid_stream(tmp_path: Path, retry_seconds: float) -> None:
    sentinel = RedisSentinelProcesses(
        tmp_path / "sentinel", replicas=1, sentinels=3, down_after_ms=1000
    ).start()
    try:
        run = run_streams(
            sentinel.url,
            tmp_path,
            kill=sentinel.kill_master,
            wait_for_failover=lambda: sentinel.wait_for_failover(FAILOVER_TIMEOUT_SECONDS),
            read_log=lambda cid: read_events(sentinel.master, cid),
            on_victim=conversation_ids(),
        )
    finally:
        sentinel.stop()
    print("\n" + run.summary(f"sentinel, REDIS_RETRY_SECONDS={retry_seconds:g}"))
    assert_exact_and_bounded(run, retry_seconds)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="One replica process of the failover test.")
    parser.add_argument("url")
    parser.add_argument("name")
    options = parser.parse_args()
    asyncio.run(replica_main(options.url, options.name))
