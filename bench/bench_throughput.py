"""Throughput of one replica: open-loop chat customers, ours against stock Rasa in the same run.

Two Rasa servers on one Redis, the same trained model and the same action server:
- **ours**: credentials.yml and endpoints.yml as shipped; customers are signed-in web chat tabs
  (the WebSocket, a JWT each, so each customer is one conversation);
- **stock**: Rasa 3.6 as it comes: its ``socketio`` channel, ``RedisTrackerStore`` and
  ``RedisLockStore`` (nothing of ours is imported into that process); customers are Socket.IO
  clients (each socket is one conversation).

The servers are measured one after the other, never at once (the machine's cores are shared).

Each customer sends one message a second, texts cycling through rule-based questions
(:data:`TEXTS`), **open loop**: at its own times whether or not the last reply came, as people
type while a reply is on its way. Two shapes of arrival:
- **random phases**: each customer starts at a random point of the second (steady traffic);
- **bursts**: every customer sends at the same instant, every second.

A level runs ``LEVEL_SECONDS``; the first ``WARM_UP_SECONDS`` (each customer's first turns,
its session start) are not measured. Reported per level: offered and answered turns per second,
p50 and p99 of the time from a message until its reply reaches the socket (the first bot
message; for ours also until the turn ends, ``typing: off``), and turns that failed or got no
reply. A side stops climbing once it saturates (p99 above ``SATURATED_P99_MS``, or answering
less than 90% of what it is offered).

Figures: the sustained throughput of each side is its highest answered turns/s at a level whose
p99 stays within ``P99_TARGET_MS``; targets (exit 1 when missed): ours >= ``TURNS_TARGET``
turns/s and >= ``STOCK_RATIO_TARGET`` x stock's sustained throughput in the same run. Beside
them, the Rasa process's CPU per turn on each side (from /proc, over each level): a replica's
capacity is a core over it, and on a machine shared with other jobs it is the figure the load
moves least, where the latencies and so the sustained throughputs move a lot.

``python -m bench.bench_throughput --help`` runs parts of it (one side, other levels, longer
levels); ``--profile DIR`` samples each level's Rasa process with py-spy and prints where its
CPU went (bench/process_profile.py), the profile behind docs/DESIGN.md's "Throughput".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import jwt
import websockets
import yaml

from bench import process_profile
from bench.figures import percentile, process_cpu_seconds
from bench.setup import BenchSetup, bench_setup
from bench.stock_socketio import StockSocketIo, stock_socketio_credentials
from testkit.processes import ROOT
from testkit.stack import RasaStack

TEXTS = ("what is your refund policy", "thanks", "hello", "are you a bot?")
LEVEL_SECONDS = 16.0
WARM_UP_SECONDS = 3.0
RANDOM_LEVELS = (10, 20, 30, 40, 50, 60, 80)
BURST_LEVELS = (10, 20, 40)
P99_TARGET_MS = 250.0
TURNS_TARGET = 40.0
STOCK_RATIO_TARGET = 1.5
#: A level beyond this p99 is past saturation: higher ones are not run.
SATURATED_P99_MS = 2000.0
#: How long after a level's last message its replies may still come.
DRAIN_SECONDS = 15.0


@dataclass
class Sent:
    at: float
    measured: bool
    reply_at: Optional[float] = None
    end_at: Optional[float] = None
    failed: str = ""


@dataclass
class Results:
    """What one level measured."""

    sent: List[Sent] = field(default_factory=list)
    seconds: float = 0.0
    #: CPU seconds the Rasa server and the action server spent over the whole level.
    rasa_cpu: float = 0.0
    actions_cpu: float = 0.0

    @property
    def measured(self) -> List[Sent]:
        return [s for s in self.sent if s.measured]

    def replies_ms(self) -> List[float]:
        return [(s.reply_at - s.at) * 1000 for s in self.measured if s.reply_at is not None]

    def ends_ms(self) -> List[float]:
        return [(s.end_at - s.at) * 1000 for s in self.measured if s.end_at is not None]

    def failed(self) -> int:
        return sum(1 for s in self.measured if s.failed or s.reply_at is None)


class OurCustomer:
    """A signed-in web chat tab; its turns run in order, so replies answer messages in order."""

    def __init__(self, stack: RasaStack) -> None:
        self.stack = stack
        self.pending: OrderedDict[str, Sent] = OrderedDict()
        #: Set while no message waits for its turn to end.
        self.idle = asyncio.Event()
        self.idle.set()

    async def open(self) -> None:
        claims = {"sub": "tp-" + secrets.token_hex(8), "exp": int(time.time()) + 3600}
        token = jwt.encode(claims, self.stack.env["WEBCHAT_JWT_SECRET"], algorithm="HS256")
        url = self.stack.base_url.replace("http://", "ws://") + "/webhooks/webchat/ws"
        self.ws = await websockets.connect(url, max_size=None, open_timeout=60)
        await self.ws.send(json.dumps({"type": "auth", "token": token}))
        ready = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
        assert ready["type"] == "ready", ready
        await asyncio.wait_for(self.ws.recv(), 60)  # the history
        self.reader = asyncio.create_task(self._read())

    async def send(self, text: str, sent: Sent) -> None:
        client_id = secrets.token_hex(8)
        self.pending[client_id] = sent
        self.idle.clear()
        await self.ws.send(json.dumps({"type": "message", "id": client_id, "text": text}))

    async def _read(self) -> None:
        async for raw in self.ws:
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "error":
                sent = self.pending.pop(frame.get("id") or "", None)
                if sent is None and self.pending:
                    sent = self.pending.pop(next(iter(self.pending)))
                if sent is not None:
                    sent.failed = frame.get("code", "error")
            elif kind == "message" and frame["message"]["role"] == "bot" and self.pending:
                sent = next(iter(self.pending.values()))
                if sent.reply_at is None:
                    sent.reply_at = time.perf_counter()
            elif kind == "typing" and not frame["on"] and self.pending:
                _, sent = self.pending.popitem(last=False)
                sent.end_at = time.perf_counter()
            if not self.pending:
                self.idle.set()

    async def close(self) -> None:
        self.reader.cancel()
        await self.ws.close()


class StockCustomer:
    """A socket of Rasa's stock channel (bench/stock_socketio.py). Each text here gets one bot
    message, so replies answer messages in order."""

    def __init__(self, stack: RasaStack) -> None:
        self.pending: List[Sent] = []
        self.idle = asyncio.Event()
        self.idle.set()
        self.socket = StockSocketIo(stack.base_url, self._replied)

    async def open(self) -> None:
        await self.socket.open()

    async def send(self, text: str, sent: Sent) -> None:
        self.pending.append(sent)
        self.idle.clear()
        await self.socket.say(text)

    def _replied(self, at: float) -> None:
        if self.pending:
            sent = self.pending.pop(0)
            sent.reply_at = sent.end_at = at
        if not self.pending:
            self.idle.set()

    async def close(self) -> None:
        await self.socket.close()


async def run_level(
    stack: RasaStack, customer_class: Any, customers: int, burst: bool, seconds: float
) -> Results:
    """``customers`` open-loop customers for ``seconds``, each sending one message a second."""
    rasa, actions = _process(stack.rasa_proc), _process(stack.action_proc)
    tabs = [customer_class(stack) for _ in range(customers)]
    for start in range(0, customers, 20):
        await asyncio.gather(*(tab.open() for tab in tabs[start : start + 20]))
    results = Results(seconds=seconds - WARM_UP_SECONDS)
    rasa_before, actions_before = process_cpu_seconds(rasa), process_cpu_seconds(actions)
    began = time.perf_counter() + 0.5
    rng = random.Random(customers * 2 + burst)

    async def customer(tab: Any, phase: float, first_text: int) -> None:
        turn = 0
        while True:
            due = began + phase + turn
            if due - began >= seconds:
                return
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            sent = Sent(at=time.perf_counter(), measured=due - began >= WARM_UP_SECONDS)
            results.sent.append(sent)
            await tab.send(TEXTS[(first_text + turn) % len(TEXTS)], sent)
            turn += 1

    await asyncio.gather(
        *(customer(tab, 0.0 if burst else rng.random(), rng.randrange(len(TEXTS))) for tab in tabs)
    )
    try:
        await asyncio.wait_for(asyncio.gather(*(tab.idle.wait() for tab in tabs)), DRAIN_SECONDS)
    except asyncio.TimeoutError:
        pass  # what is still unanswered counts as failed
    results.rasa_cpu, results.actions_cpu = (
        process_cpu_seconds(rasa) - rasa_before,
        process_cpu_seconds(actions) - actions_before,
    )
    await asyncio.gather(*(tab.close() for tab in tabs), return_exceptions=True)
    return results


def _process(proc: Any) -> Optional[int]:
    return proc.pid if proc is not None else None


@dataclass
class Level:
    side: str
    shape: str
    customers: int
    results: Results

    @property
    def offered(self) -> float:
        return len(self.results.measured) / self.results.seconds

    @property
    def answered(self) -> float:
        replies = self.results.replies_ms()
        return len(replies) / self.results.seconds

    @property
    def p99(self) -> float:
        return percentile(self.results.replies_ms(), 0.99)

    @property
    def cpu_ms(self) -> Tuple[float, float]:
        """CPU ms per answered turn of the Rasa server and of the action server."""
        answered = sum(1 for s in self.results.sent if s.reply_at is not None) or 1
        return (
            self.results.rasa_cpu * 1000 / answered,
            self.results.actions_cpu * 1000 / answered,
        )

    @property
    def saturated(self) -> bool:
        return self.p99 > SATURATED_P99_MS or self.answered < 0.9 * self.offered

    def row(self) -> str:
        replies, ends = self.results.replies_ms(), self.results.ends_ms()
        end = (
            f"{percentile(ends, 0.5):>7.0f} {percentile(ends, 0.99):>7.0f}"
            if self.side == "ours"
            else f"{'':>7} {'':>7}"
        )
        return (
            f"{self.side:<6} {self.shape:<7} {self.customers:>4} {self.offered:>8.1f} "
            f"{self.answered:>8.1f} {percentile(replies, 0.5):>7.0f} {self.p99:>7.0f} {end} "
            f"{self.results.failed():>6} {self.cpu_ms[0]:>6.1f} {self.cpu_ms[1]:>6.1f}"
            f"  load {os.getloadavg()[0]:.1f}"
        )


HEADER = (
    f"{'side':<6} {'shape':<7} {'cust':>4} {'offer/s':>8} {'turns/s':>8} {'p50':>7} {'p99':>7} "
    f"{'end p50':>7} {'end p99':>7} {'failed':>6} {'cpu':>6} {'cpu':>6}\n"
    f"{'':<6} {'':<7} {'':>4} {'':>8} {'':>8} {'':>7} {'':>7} {'':>7} {'':>7} {'':>6} "
    f"{'rasa':>6} {'action':>6}  (ms; reply = first bot message; cpu: ms per turn)"
)


def stock_endpoints(directory: Path, redis_port: int) -> Path:
    """Rasa's own Redis tracker and lock stores, and the same action server."""
    path = directory / "endpoints-stock.yml"
    path.write_text(
        yaml.safe_dump(
            {
                "action_endpoint": {"url": "${ACTION_SERVER_URL}"},
                "tracker_store": {"type": "redis", "url": "127.0.0.1", "port": redis_port},
                "lock_store": {"type": "redis", "url": "127.0.0.1", "port": redis_port},
            }
        )
    )
    return path


def stock_credentials(directory: Path) -> Path:
    path = directory / "credentials-stock.yml"
    path.write_text(stock_socketio_credentials())
    return path


async def climb(
    stacks: Dict[str, RasaStack],
    levels: Sequence[int],
    burst: bool,
    seconds: float,
    profiles: Optional[Path] = None,
) -> Dict[str, List[Level]]:
    """Each level on each side in turn (so both see the machine alike), until a side
    saturates; that side then sits out the higher levels. With ``profiles``, py-spy samples
    each level's Rasa process into that directory (bench/process_profile.py)."""
    classes = {"ours": OurCustomer, "stock": StockCustomer}
    measured: Dict[str, List[Level]] = {side: [] for side in stacks}
    shape = "burst" if burst else "random"
    for customers in levels:
        for side, stack in stacks.items():
            if measured[side] and measured[side][-1].saturated:
                continue
            profile = profiler = None
            if profiles is not None and stack.rasa_proc is not None:
                profile = profiles / f"{side}-{shape}-{customers}.txt"
                profiler = process_profile.record(stack.rasa_proc.pid, profile, seconds)
            results = await run_level(stack, classes[side], customers, burst, seconds)
            level = Level(side, shape, customers, results)
            print(level.row(), flush=True)
            measured[side].append(level)
            if profiler is not None and profile is not None:
                await asyncio.to_thread(profiler.wait)
                print(process_profile.summary(profile, f"{side}, {shape}, {customers}"))
    return measured


def sustained(levels: Sequence[Level]) -> Tuple[float, Optional[Level]]:
    within = [level for level in levels if level.p99 <= P99_TARGET_MS]
    best = max(within, key=lambda level: level.answered, default=None)
    return (best.answered if best else 0.0), best


def start_sides(setup: BenchSetup, sides: Sequence[str]) -> Dict[str, RasaStack]:
    stacks: Dict[str, RasaStack] = {}
    for side in sides:
        if side == "ours":
            stack = setup.rasa(ROOT / "credentials.yml", name="ours")
        else:
            stack = setup.rasa(
                stock_credentials(setup.work),
                name="stock",
                endpoints=stock_endpoints(setup.work, setup.redis.port),
            )
        if stacks:
            first = next(iter(stacks.values()))
            stack.action_port, stack.action_proc = first.action_port, first.action_proc
            stack.owns_action_server = False
        stack.start()
        stacks[side] = stack
    return stacks


async def _run(
    stacks: Dict[str, RasaStack],
    levels: Sequence[int],
    bursts: Sequence[int],
    seconds: float,
    profiles: Optional[Path],
) -> Dict[str, List[Level]]:
    print(HEADER, flush=True)
    steady = await climb(stacks, levels, False, seconds, profiles)
    bursty = await climb(stacks, bursts, True, seconds, profiles)
    return {side: steady[side] + bursty[side] for side in stacks}


def report(measured: Dict[str, List[Level]]) -> bool:
    ok = True
    figures = {}
    for side, levels in measured.items():
        randoms = [level for level in levels if level.shape == "random"]
        figures[side], best = sustained(randoms)
        at = f" ({best.customers} customers, p99 {best.p99:.0f} ms)" if best else ""
        print(
            f"{side}: sustained {figures[side]:.1f} turns/s with p99 <= {P99_TARGET_MS:.0f} ms{at}"
        )
    if "ours" in figures:
        met = figures["ours"] >= TURNS_TARGET
        ok = ok and met
        print(f"ours >= {TURNS_TARGET:.0f} turns/s: {'met' if met else 'MISSED'}")
    if "ours" in figures and "stock" in figures:
        if figures["stock"]:
            ratio = figures["ours"] / figures["stock"]
            shown = f"{ratio:.2f}"
        else:
            # Stock kept its p99 within the target at no level: its figure is below the lowest
            # level's offer, so the ratio is at least ours over that offer.
            lowest = min(
                (level for level in measured["stock"] if level.shape == "random"),
                key=lambda level: level.customers,
            )
            ratio = figures["ours"] / lowest.offered
            shown = f">= {ratio:.2f} (stock's p99 over {P99_TARGET_MS:.0f} ms at every level)"
        met = ratio >= STOCK_RATIO_TARGET
        ok = ok and met
        verdict = "met" if met else "MISSED"
        print(f"ours / stock = {shown} (target >= {STOCK_RATIO_TARGET}: {verdict})")
        print(cpu_ratio(measured["ours"], measured["stock"]))
    return ok


def cpu_ratio(ours: Sequence[Level], stock: Sequence[Level]) -> str:
    """The Rasa process's CPU per turn on each side, at the random-phase levels both ran: a
    replica's capacity is one core over it, and unlike the latencies it barely moves with the
    machine's load."""
    both = {level.customers for level in stock if level.shape == "random"} & {
        level.customers for level in ours if level.shape == "random"
    }

    def median_cpu(levels: Sequence[Level]) -> float:
        values = sorted(
            level.cpu_ms[0]
            for level in levels
            if level.shape == "random" and level.customers in both
        )
        return values[len(values) // 2] if values else float("nan")

    mine, theirs = median_cpu(ours), median_cpu(stock)
    return (
        f"Rasa process CPU per turn at {sorted(both)} customers: ours {mine:.1f} ms, "
        f"stock {theirs:.1f} ms (stock / ours {theirs / mine:.2f})"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sides", default="ours,stock")
    parser.add_argument("--levels", default=",".join(map(str, RANDOM_LEVELS)))
    parser.add_argument("--bursts", default=",".join(map(str, BURST_LEVELS)))
    parser.add_argument("--seconds", type=float, default=LEVEL_SECONDS)
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample each level's Rasa process with py-spy into DIR (bench/process_profile.py)",
    )
    args = parser.parse_args(argv)
    if args.profile is not None and not process_profile.available():
        parser.error("--profile needs py-spy on the PATH (pip install py-spy)")
    levels = [int(n) for n in args.levels.split(",") if n]
    bursts = [int(n) for n in args.bursts.split(",") if n]
    with bench_setup() as setup:
        stacks = start_sides(setup, args.sides.split(","))
        for side, stack in stacks.items():
            print(f"{side}: rasa pid {stack.rasa_proc.pid if stack.rasa_proc else '?'}", flush=True)
        measured = asyncio.run(_run(stacks, levels, bursts, args.seconds, args.profile))
    return 0 if report(measured) else 1


if __name__ == "__main__":
    raise SystemExit(main())
