"""Flat turns: a turn at the 300th and 1,000th turn of a conversation against one at the 10th.

Two Rasa servers run side by side on one Redis, the same trained model and the same connectors:
- **ours**: endpoints.yml as shipped (the bounded tracker, the Rasa patches:
  connectors/tracker_store.py, connectors/rasa_patches.py, connectors/rasa_speedups.py);
- **stock**: the same file with ``window_turns: 0`` and ``rasa_patches: false``, i.e. Rasa's
  stock turn: policies and action calls get the whole session, the turn context is a call to
  the action server on every user message, every action reply's schema is checked against its
  metaschema. (Our append-only store serves both: Rasa's own Redis store replays and rewrites
  the whole conversation on every save, see bench_tracker_store, and would swamp the rest.)

Each server holds, per length in ``LENGTHS``, one web chat conversation (the WebSocket: message
sent until the turn's typing indicator stops) and one phone conversation (the VAPI custom-LLM
stream: request until the first content chunk), each as long as its length. A conversation's
turns before its length are its own first real turns, repeated (fresh timestamps and message
ids) straight into its Redis log, and one real turn after the fill lets the server catch up, so
the stock side reaches turn 1,000 in minutes. The measured turns then go **round by round**: in
each round every conversation of every length and side gets the same text, through the same
path a customer's takes, one after the other. Turn 10 and turn 300 are measured seconds apart,
not minutes, so a machine shared with other jobs loads them alike, and the ratios compare like
with like. Texts cycle through rule-based questions, each answer checked.

A bench-only channel (bench/turn_profile.py) times the parts of each measured turn inside Rasa,
and the process's CPU during it (a second figure for the ratio, which the machine's load barely
moves); the breakdown is the mean of each part over the measured web chat turns.

Targets (exit 1 when missed), ours: on every text, web chat and voice, the median turn at turn
300 at most 1.1x the one at turn 10 and at turn 1,000 at most 1.2x; the median web chat turn at
most 45 ms and first voice chunk at most 55 ms over all measured turns; the action server's
time per call at turn 1,000 at most 1.2x turn 10 (+2 ms).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Dict, Iterable, List, Tuple

import httpx
import jwt
import redis.asyncio as aioredis
import websockets
import yaml

from bench.figures import CPU_PART
from bench.setup import BenchSetup, bench_setup
from omnichannel.addresses import phone_address
from omnichannel.identity import IdentityStore
from omnichannel.redis_client import conversation_key
from testkit.phone_numbers import new_phone_number
from testkit.processes import ROOT
from testkit.stack import RasaStack
from testkit.vapi_call import VapiCall

#: Conversation lengths measured side by side; the first is the baseline of the ratios.
LENGTHS = (10, 300, 1000)
#: Rounds of measured turns (each text as often: ROUNDS / 4 times per length and channel).
ROUNDS = 24
#: Rule-based questions, each with a word of its answer (checked, so a stray frame of another
#: turn is never timed as this one's reply).
ANSWERS = {
    "what is your refund policy": "refund",
    "thanks": "welcome",
    "hello": "Acme Shop",
    "are you a bot?": "virtual assistant",
}
TEXTS = tuple(ANSWERS)
#: The chat's rate limit lets one message a second through after a burst.
CHAT_PACE = 1.05
#: Highest ratio to turn 10 allowed at each longer length.
RATIO_TARGETS = {300: 1.1, 1000: 1.2}
CHAT_MEDIAN_TARGET_MS = 45.0
VOICE_MEDIAN_TARGET_MS = 55.0
BREAKDOWN_AT = (10, 1000)


@dataclass
class Conversation:
    """One conversation on one server; ``turns`` counts its user turns so far."""

    stack: RasaStack
    redis: aioredis.Redis
    conversation_id: str = ""
    turns: int = 0
    template: List[List[Dict[str, Any]]] = field(default_factory=list)

    async def fill_to(self, turns: int) -> None:
        """Appends copies of the template's turns to the log until it holds ``turns``."""
        key = conversation_key(self.conversation_id, "events")
        if not self.template:
            self.template = await _last_turns(self.redis, key, len(TEXTS))
        stamp = time.time() - 1.0
        batch: List[str] = []
        while self.turns < turns:
            for event in self.template[self.turns % len(self.template)]:
                copied = dict(event, timestamp=stamp)
                if copied.get("event") == "user":
                    copied["message_id"] = uuid.uuid4().hex
                batch.append(json.dumps(copied))
                stamp += 1e-4
            self.turns += 1
        for start in range(0, len(batch), 1000):
            await self.redis.rpush(key, *batch[start : start + 1000])


async def _last_turns(redis: aioredis.Redis, key: str, count: int) -> List[List[Dict[str, Any]]]:
    """The log's last ``count`` user turns, each from its user message to the next one."""
    events = [json.loads(raw) for raw in await redis.lrange(key, 0, -1)]
    users = [i for i, event in enumerate(events) if event.get("event") == "user"][-count:]
    ends = users[1:] + [len(events)]
    return [events[start:end] for start, end in zip(users, ends, strict=True)]


class ChatTab(Conversation):
    async def open(self) -> None:
        claims = {"sub": "bench-" + secrets.token_hex(6), "exp": int(time.time()) + 3600}
        token = jwt.encode(claims, self.stack.env["WEBCHAT_JWT_SECRET"], algorithm="HS256")
        url = self.stack.base_url.replace("http://", "ws://") + "/webhooks/webchat/ws"
        self.ws = await websockets.connect(url, max_size=None)
        await self.ws.send(json.dumps({"type": "auth", "token": token}))
        ready = json.loads(await self.ws.recv())
        assert ready["type"] == "ready", ready
        self.conversation_id = ready["conversation_id"]
        await self.ws.recv()  # the history
        self.last_sent = 0.0

    async def turn(self, text: str) -> float:
        await asyncio.sleep(max(0.0, self.last_sent + CHAT_PACE - time.monotonic()))
        self.last_sent = time.monotonic()
        started = time.perf_counter()
        await self.ws.send(
            json.dumps({"type": "message", "id": secrets.token_hex(8), "text": text})
        )
        replied = False
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), 120))
            if frame["type"] == "error":
                raise RuntimeError(f"web chat error frame: {frame}")
            if frame["type"] == "message" and frame["message"]["role"] == "bot":
                replied = True
            if frame["type"] == "typing" and not frame["on"] and replied:
                self.turns += 1
                return (time.perf_counter() - started) * 1000

    async def close(self) -> None:
        await self.ws.close()


class PhoneLine(Conversation):
    async def open(self) -> None:
        self.number = new_phone_number()
        self.call = self._new_call()
        await self.turn(TEXTS[0])
        found = await IdentityStore(self.redis).lookup(phone_address(self.number))
        assert found, "the call made no conversation"
        self.conversation_id = found

    def _new_call(self) -> VapiCall:
        return VapiCall(
            base_url=self.stack.base_url,
            server_secret=self.stack.env["VAPI_SERVER_SECRET"],
            number=self.number,
            timeout=120,
        )

    async def next_call(self) -> None:
        """Calls are short, conversations long: each checkpoint is a new call."""
        await self.call.aclose()
        self.call = self._new_call()

    async def turn(self, text: str) -> float:
        reply = await self.call.say(text)
        if reply.first_content_seconds is None or ANSWERS[text] not in reply.text:
            raise RuntimeError(f"{text!r} was answered {reply.text!r}")
        self.turns += 1
        return reply.first_content_seconds * 1000

    async def close(self) -> None:
        await self.call.aclose()


def _stock_endpoints(directory: Path) -> Path:
    config = yaml.safe_load((ROOT / "endpoints.yml").read_text())
    config["tracker_store"].update(window_turns=0, rasa_patches=False)
    path = directory / "endpoints-stock.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def _credentials(directory: Path) -> Path:
    path = directory / "credentials.yml"
    path.write_text(
        (ROOT / "credentials.yml").read_text() + "\nbench.turn_profile.TurnProfileInput:\n"
    )
    return path


async def _profiled(
    client: httpx.AsyncClient, turn: Awaitable[float]
) -> Tuple[float, Dict[str, float]]:
    """A turn (a chat message or a phone line's utterance): its end-to-end ms as the customer
    sees it, and the server's record of it."""
    (await client.get("/webhooks/turn_profile/turns")).raise_for_status()
    elapsed = await turn
    records = (await client.get("/webhooks/turn_profile/turns")).json()
    record = records[-1] if records else {}
    rasa_ms = max(record.get("lock + turn (agent)", 0.0), record.get("turn (processor)", 0.0))
    record["connector and transport (client minus Rasa)"] = elapsed - rasa_ms
    return elapsed, record


@dataclass
class Sample:
    """One measured turn."""

    text: str
    ms: float
    record: Dict[str, float]

    @property
    def cpu_ms(self) -> float:
        return self.record.get(CPU_PART, 0.0)


@dataclass
class Lines:
    """One length's conversations on one side, and what was measured on them."""

    chat: ChatTab
    phone: PhoneLine
    chat_turns: List[Sample] = field(default_factory=list)
    voice_turns: List[Sample] = field(default_factory=list)


@dataclass
class Side:
    name: str
    stack: RasaStack
    client: httpx.AsyncClient
    lengths: Dict[int, Lines] = field(default_factory=dict)


async def _prepare(side: Side, redis: aioredis.Redis, length: int) -> None:
    """A chat and a phone conversation ``length - 1`` turns long, the next measured one the
    ``length``-th: real turns first, a fill from them, a real turn to catch up."""
    chat, phone = ChatTab(side.stack, redis), PhoneLine(side.stack, redis)
    await chat.open()
    await phone.open()
    for line in (chat, phone):
        while line.turns < min(len(TEXTS), length - 1):
            await line.turn(TEXTS[line.turns % len(TEXTS)])
        if line.turns < length - 2:
            await line.fill_to(length - 2)
        while line.turns < length - 1:
            await line.turn(TEXTS[line.turns % len(TEXTS)])
    await phone.next_call()  # the measured turns in a call of their own
    side.lengths[length] = Lines(chat, phone)


async def _round(sides: List[Side], text: str) -> None:
    """``text`` once on every conversation of every length and side, chats then calls."""
    for side in sides:
        for lines in side.lengths.values():
            ms, record = await _profiled(side.client, lines.chat.turn(text))
            lines.chat_turns.append(Sample(text, ms, record))
    for side in sides:
        for lines in side.lengths.values():
            ms, record = await _profiled(side.client, lines.phone.turn(text))
            lines.voice_turns.append(Sample(text, ms, record))


def _median(values: Iterable[float]) -> float:
    listed = list(values)
    return statistics.median(listed) if listed else 0.0


def _mean(records: List[Dict[str, float]], part: str) -> float:
    return statistics.fmean(record.get(part, 0.0) for record in records) if records else 0.0


def _turns(side: Side, channel: str, length: int, text: str = "") -> List[Sample]:
    samples = getattr(side.lengths[length], f"{channel}_turns")
    return [sample for sample in samples if not text or sample.text == text]


def _report(ours: Side, stock: Side) -> bool:
    per_text = ROUNDS // len(TEXTS)
    print(
        f"median ms per text at each length ({per_text} turns each, measured round by round; "
        "chat: until the turn ends, voice: until the first chunk); x: / turn "
        f"{LENGTHS[0]}; cpu: the Rasa process's CPU ms during the turn"
    )
    header = " ".join(f"{f'turn {n}':>9} {'x':>5}" for n in LENGTHS)
    print(f"{'side':<6} {'channel':<6} {'text':<27} {header} {'cpu x':>6}")
    ok = True
    for side in (ours, stock):
        for channel in ("chat", "voice"):
            for text in TEXTS + ("",):
                base = _median(s.ms for s in _turns(side, channel, LENGTHS[0], text))
                cells, verdicts = [], []
                for length in LENGTHS:
                    median = _median(s.ms for s in _turns(side, channel, length, text))
                    ratio = median / base if base else float("nan")
                    cells.append(f"{median:>9.1f} {ratio:>5.2f}")
                    limit = RATIO_TARGETS.get(length)
                    if side is ours and text and limit is not None and not ratio <= limit:
                        verdicts.append(f"turn {length} MISSED (target <= {limit})")
                        ok = False
                cpu_base = _median(s.cpu_ms for s in _turns(side, channel, LENGTHS[0], text))
                cpu_last = _median(s.cpu_ms for s in _turns(side, channel, LENGTHS[1], text))
                cpu = f"{cpu_last / cpu_base:>6.2f}" if cpu_base else f"{'':>6}"
                label = text or "(all texts)"
                print(
                    f"{side.name:<6} {channel:<6} {label:<27} {' '.join(cells)} {cpu}  "
                    + "; ".join(verdicts)
                )
    if ok:
        targets = ", ".join(f"turn {n} <= {t}x" for n, t in RATIO_TARGETS.items())
        print(f"ours, every text, chat and voice: {targets} turn {LENGTHS[0]}: met")
    for channel, target_ms in (("chat", CHAT_MEDIAN_TARGET_MS), ("voice", VOICE_MEDIAN_TARGET_MS)):
        every = [s.ms for n in LENGTHS for s in _turns(ours, channel, n)]
        median = _median(every)
        met = median <= target_ms
        ok = ok and met
        label = "web chat turn" if channel == "chat" else "first voice chunk"
        print(
            f"ours, median {label} over all lengths: {median:.1f} ms "
            f"(target <= {target_ms:.0f}: {'met' if met else 'MISSED'})"
        )
    return _breakdown(ours, stock) and ok


def _breakdown(ours: Side, stock: Side) -> bool:
    """Mean ms per turn of each part of the measured web chat turns, at turns 10 and 1,000
    (a mean, as some parts run in only some turns: the greeting's remote action)."""
    columns = [(side, at) for side in (ours, stock) for at in BREAKDOWN_AT]
    records = {
        (side.name, at): [s.record for s in _turns(side, "chat", at)] for side, at in columns
    }
    parts = sorted(
        {part for rows in records.values() for row in rows for part in row},
        key=lambda part: -_mean(records[(stock.name, BREAKDOWN_AT[-1])], part),
    )
    header = " ".join(f"{f'{side.name} @{at}':>12}" for side, at in columns)
    print(f"\nper-turn breakdown, web chat (mean ms per turn; parts nest)\n{'part':<58} {header}")
    for part in parts:
        cells = " ".join(f"{_mean(records[(side.name, at)], part):>12.1f}" for side, at in columns)
        print(f"{part[:58]:<58} {cells}")
    remote = {
        at: [
            value
            for record in records[(ours.name, at)]
            for part, value in record.items()
            if part.startswith("remote: ") and part.endswith("(all)")
        ]
        for at in BREAKDOWN_AT
    }
    first, last = (_median(remote[at]) for at in BREAKDOWN_AT)
    met = last <= first * RATIO_TARGETS[BREAKDOWN_AT[-1]] + 2.0
    print(
        f"ours, action server call (Rasa side, whole call): {first:.1f} ms at turn "
        f"{BREAKDOWN_AT[0]}, {last:.1f} ms at turn {BREAKDOWN_AT[-1]} "
        f"(flat target: {'met' if met else 'MISSED'})"
    )
    return met


async def _run(setup: BenchSetup) -> bool:
    credentials = _credentials(setup.work)
    sides: List[Side] = []
    redis = aioredis.Redis.from_url(setup.redis.url)
    try:
        for name, endpoints in (
            ("ours", ROOT / "endpoints.yml"),
            ("stock", _stock_endpoints(setup.work)),
        ):
            stack = setup.rasa(credentials, name=name, endpoints=endpoints)
            stack.start()
            client = httpx.AsyncClient(base_url=stack.base_url, timeout=120)
            (await client.post("/webhooks/turn_profile/start")).raise_for_status()
            sides.append(Side(name, stack, client))
        started = time.monotonic()
        for side in sides:
            for length in LENGTHS:
                await _prepare(side, redis, length)
        print(f"(conversations of {LENGTHS} turns ready in {time.monotonic() - started:.0f} s)")
        started = time.monotonic()
        for index in range(ROUNDS):
            await _round(sides, TEXTS[index % len(TEXTS)])
        print(f"({ROUNDS} rounds measured in {time.monotonic() - started:.0f} s)", flush=True)
        for side in sides:
            for lines in side.lengths.values():
                await lines.chat.close()
                await lines.phone.close()
        return _report(*sides)
    finally:
        for side in sides:
            await side.client.aclose()
        await redis.close()


def main() -> int:
    with bench_setup() as setup:
        ok = asyncio.run(_run(setup))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
