"""Flat turns: per-turn time at turns 10, 100, 500 and 1,000 of one conversation.

Two Rasa servers run side by side on one Redis, the same trained model and the same connectors:
- **ours**: endpoints.yml as shipped (the bounded tracker, the turn context in process, the
  action reply validator built once: connectors/tracker_store.py, connectors/rasa_patches.py);
- **stock**: the same file with ``window_turns: 0`` and ``rasa_patches: false``, i.e. Rasa's
  stock turn: policies and action calls get the whole session, the turn context is a call to
  the action server on every user message, every action reply's schema is checked against its
  metaschema. (Our append-only store serves both: Rasa's own Redis store replays and rewrites
  the whole conversation on every save, see bench_tracker_store, and would swamp the rest.)

For each, one web chat conversation (the WebSocket: message sent until the turn's typing
indicator stops) and one phone conversation (the VAPI custom-LLM stream: request until the
first content chunk; a new call at each checkpoint, as calls are short and conversations
long), texts cycling through rule-based questions. The turns before each checkpoint are the
conversation's own first real turns, repeated (fresh timestamps and message ids) straight into
its Redis log, so the stock side reaches turn 1,000 in minutes; one real turn after each fill
lets each server catch up with the log before the measured turns.

A bench-only channel (bench/turn_profile.py) times the parts of each measured turn inside Rasa;
the breakdown at turns 10 and 1,000 is the median of each part over the measured turns.

Targets (exit 1 when missed): ours at turn 1,000 at most 1.2x ours at turn 10 (web chat and
voice); median web chat turn at most 45 ms and first voice chunk at most 55 ms over all our
measured turns; the action server's time per call at turn 1,000 at most 1.2x turn 10 (+2 ms).
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
from typing import Any, Dict, List

import httpx
import jwt
import redis.asyncio as aioredis
import websockets
import yaml

from bench.setup import BenchSetup, bench_setup
from omnichannel.addresses import phone_address
from omnichannel.identity import IdentityStore
from omnichannel.redis_client import conversation_key
from testkit.phone_numbers import new_phone_number
from testkit.processes import ROOT
from testkit.stack import RasaStack
from testkit.vapi_call import VapiCall

CHECKPOINTS = (10, 100, 500, 1000)
MEASURED = 8
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
TURN_RATIO_TARGET = 1.2
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


async def _profiled(chat: ChatTab, text: str) -> tuple[float, Dict[str, float]]:
    """A chat turn: its end-to-end ms and the server's record of it."""
    async with httpx.AsyncClient(base_url=chat.stack.base_url, timeout=30) as client:
        (await client.get("/webhooks/turn_profile/turns")).raise_for_status()
        elapsed = await chat.turn(text)
        records = (await client.get("/webhooks/turn_profile/turns")).json()
    record = records[-1] if records else {}
    rasa_ms = max(record.get("lock + turn (agent)", 0.0), record.get("turn (processor)", 0.0))
    record["connector and transport (client minus Rasa)"] = elapsed - rasa_ms
    return elapsed, record


@dataclass
class Side:
    name: str
    stack: RasaStack
    chat: ChatTab
    phone: PhoneLine
    chat_ms: Dict[int, List[float]] = field(default_factory=dict)
    voice_ms: Dict[int, List[float]] = field(default_factory=dict)
    records: Dict[int, List[Dict[str, float]]] = field(default_factory=dict)


async def _checkpoint(sides: List[Side], at: int) -> None:
    for side in sides:
        for line in (side.chat, side.phone):
            # Filled from the conversation's own first real turns, once there are enough.
            if len(TEXTS) <= line.turns < at - 2:
                await line.fill_to(at - 2)
        await side.phone.next_call()
        while side.chat.turns < at - 1:  # real turns: the first ones, or the catch-up after a fill
            await side.chat.turn(TEXTS[side.chat.turns % len(TEXTS)])
        while side.phone.turns < at - 1:
            await side.phone.turn(TEXTS[side.phone.turns % len(TEXTS)])
        side.chat_ms[at], side.voice_ms[at], side.records[at] = [], [], []
    for index in range(MEASURED):
        text = TEXTS[(at + index) % len(TEXTS)]
        for side in sides:
            elapsed, record = await _profiled(side.chat, text)
            side.chat_ms[at].append(elapsed)
            side.records[at].append(record)
    for index in range(MEASURED):
        text = TEXTS[(at + index) % len(TEXTS)]
        for side in sides:
            side.voice_ms[at].append(await side.phone.turn(text))


def _median(values: List[float]) -> float:
    return statistics.median(values) if values else 0.0


def _mean(records: List[Dict[str, float]], part: str) -> float:
    return statistics.fmean(record.get(part, 0.0) for record in records) if records else 0.0


def _report(ours: Side, stock: Side) -> bool:
    print(f"median ms of {MEASURED} turns at each checkpoint (texts: {', '.join(TEXTS)})")
    print(
        f"{'turn':>6} | {'chat ours':>9} {'stock':>8} {'stock/ours':>10} | "
        f"{'voice 1st chunk ours':>20} {'stock':>8} {'stock/ours':>10}"
    )
    for at in CHECKPOINTS:
        chat_o, chat_s = _median(ours.chat_ms[at]), _median(stock.chat_ms[at])
        voice_o, voice_s = _median(ours.voice_ms[at]), _median(stock.voice_ms[at])
        print(
            f"{at:>6} | {chat_o:>9.1f} {chat_s:>8.1f} {chat_s / chat_o:>9.1f}x | "
            f"{voice_o:>20.1f} {voice_s:>8.1f} {voice_s / voice_o:>9.1f}x"
        )
    first, last = CHECKPOINTS[0], CHECKPOINTS[-1]
    ok = True
    for label, side_ms in (("chat", "chat_ms"), ("voice", "voice_ms")):
        for side in (ours, stock):
            series = getattr(side, side_ms)
            ratio = _median(series[last]) / _median(series[first])
            target = side is ours
            met = ratio <= TURN_RATIO_TARGET
            ok = ok and (met or not target)
            mark = (
                f" (target <= {TURN_RATIO_TARGET}: {'met' if met else 'MISSED'})" if target else ""
            )
            print(f"{label} {side.name}: turn {last} / turn {first} = {ratio:.2f}{mark}")
    all_chat = [ms for values in ours.chat_ms.values() for ms in values]
    all_voice = [ms for values in ours.voice_ms.values() for ms in values]
    for label, values, target_ms in (
        ("web chat turn", all_chat, CHAT_MEDIAN_TARGET_MS),
        ("first voice chunk", all_voice, VOICE_MEDIAN_TARGET_MS),
    ):
        median = _median(values)
        met = median <= target_ms
        ok = ok and met
        print(
            f"ours, median {label} over all checkpoints: {median:.1f} ms "
            f"(target <= {target_ms:.0f}: {'met' if met else 'MISSED'})"
        )
    ok = _breakdown(ours, stock) and ok
    return ok


def _breakdown(ours: Side, stock: Side) -> bool:
    """Mean ms per turn of each part of the measured web chat turns, at turns 10 and 1,000
    (a mean, as some parts run in only some turns: the greeting's remote action)."""
    columns = [(side, at) for side in (ours, stock) for at in BREAKDOWN_AT]
    parts = sorted(
        {part for side, at in columns for record in side.records[at] for part in record},
        key=lambda part: -_mean(stock.records[BREAKDOWN_AT[-1]], part),
    )
    header = " ".join(f"{f'{side.name} @{at}':>12}" for side, at in columns)
    print(f"\nper-turn breakdown, web chat (mean ms per turn; parts nest)\n{'part':<58} {header}")
    for part in parts:
        cells = " ".join(f"{_mean(side.records[at], part):>12.1f}" for side, at in columns)
        print(f"{part[:58]:<58} {cells}")
    remote = {
        at: [
            value
            for record in ours.records[at]
            for part, value in record.items()
            if part.startswith("remote: ") and part.endswith("(all)")
        ]
        for at in BREAKDOWN_AT
    }
    first, last = (_median(remote[at]) for at in BREAKDOWN_AT)
    met = last <= first * TURN_RATIO_TARGET + 2.0
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
            async with httpx.AsyncClient(base_url=stack.base_url) as client:
                (await client.post("/webhooks/turn_profile/start")).raise_for_status()
            chat, phone = ChatTab(stack, redis), PhoneLine(stack, redis)
            await chat.open()
            await phone.open()
            sides.append(Side(name, stack, chat, phone))
        for at in CHECKPOINTS:
            started = time.monotonic()
            await _checkpoint(sides, at)
            print(f"(turn {at} measured in {time.monotonic() - started:.0f} s)", flush=True)
        for side in sides:
            await side.chat.close()
            await side.phone.close()
        return _report(*sides)
    finally:
        await redis.close()


def main() -> int:
    with bench_setup() as setup:
        ok = asyncio.run(_run(setup))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
