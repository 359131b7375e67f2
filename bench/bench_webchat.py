"""Web chat: our `webchat` WebSocket channel vs Rasa's stock `socketio` channel.

Both channels run in ONE Rasa server (the project's credentials plus a `socketio:` section), on
the same trained model, Redis stores and action server, so only the channel differs; a second
Rasa server (a replica on the same Redis) serves the other tab of the fan-out case.

Measured:
- turn latency: a customer's message until the first bot message reaches the socket, 30 turns
  in a row on one socket, then 8 sockets at once (5 turns each);
- fan-out: a chat message sent to server A, until its reply reaches a second tab of the same
  conversation connected to server B (the stock channel has no fan-out: its second tab never
  sees the turn);
- reconnect: the messages our tab shows after reconnecting (the stock channel replays nothing,
  and its sender is the socket id, so a reconnect starts an empty conversation).

Targets (exit 1 when missed): our turn p50 at most 1.2x the stock channel's + 20 ms (JWT-bound
conversation, dedupe SET NX and history cost) in both cases; fan-out p99 under 1 s after the
sending tab's reply; every reply seen by the other tab; reconnect shows the history.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import jwt
import websockets

from bench.figures import percentile
from bench.setup import bench_setup
from bench.stock_socketio import StockSocketIo, stock_socketio_credentials
from testkit.processes import ROOT
from testkit.stack import RasaStack

TEXT = "what's your refund policy"
SEQUENTIAL_TURNS = 30
CONCURRENT_SOCKETS, TURNS_EACH = 8, 5
FAN_OUT_TURNS = 15
#: A turn starts at most this often per socket: people do not type faster, and our channel's
#: rate limit (1 message per second after a burst of 10) would drop the excess.
TURN_PACE = 1.05


def credentials_with_socketio(directory: Path) -> Path:
    path = directory / "credentials.yml"
    path.write_text((ROOT / "credentials.yml").read_text() + "\n" + stock_socketio_credentials())
    return path


class OurTab:
    def __init__(self, base_url: str, token: str) -> None:
        self.url = base_url.replace("http://", "ws://") + "/webhooks/webchat/ws"
        self.token = token
        self.history: List[Dict[str, Any]] = []

    async def __aenter__(self) -> OurTab:
        self.ws = await websockets.connect(self.url)
        await self.ws.send(json.dumps({"type": "auth", "token": self.token}))
        assert json.loads(await self.ws.recv())["type"] == "ready"
        self.history = json.loads(await self.ws.recv())["messages"]
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.ws.close()

    async def next_bot(self) -> Tuple[float, Dict[str, Any]]:
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
            if frame["type"] == "error":
                raise RuntimeError(f"webchat error frame: {frame}")
            if frame["type"] == "message" and frame["message"]["role"] == "bot":
                return time.perf_counter(), frame["message"]

    async def turn_done(self) -> None:
        while True:
            frame = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
            if frame["type"] == "typing" and not frame["on"]:
                return

    async def turn(self) -> float:
        started = time.perf_counter()
        await self.ws.send(
            json.dumps({"type": "message", "id": secrets.token_hex(8), "text": TEXT})
        )
        arrived, _ = await self.next_bot()
        await self.turn_done()
        return arrived - started


class StockTab:
    """A tab of the stock channel (bench/stock_socketio.py), one turn at a time."""

    def __init__(self, base_url: str) -> None:
        self.replies: asyncio.Queue = asyncio.Queue()
        self.socket = StockSocketIo(base_url, self.replies.put_nowait)

    async def __aenter__(self) -> StockTab:
        await self.socket.open()
        return self

    async def __aexit__(self, *_: Any) -> None:
        await self.socket.close()

    async def turn(self) -> float:
        while not self.replies.empty():
            self.replies.get_nowait()
        started = time.perf_counter()
        await self.socket.say(TEXT)
        arrived = await asyncio.wait_for(self.replies.get(), 60)
        await asyncio.sleep(0.3)  # the rest of the turn, as ours waits for `typing: off`
        return arrived - started


def token(secret: str) -> str:
    return jwt.encode(
        {"sub": "bench-" + secrets.token_hex(6), "exp": int(time.time()) + 3600},
        secret,
        algorithm="HS256",
    )


async def paced_turns(tab: Any, count: int) -> List[float]:
    seconds = []
    for _ in range(count):
        started = time.monotonic()
        seconds.append(await tab.turn())
        await asyncio.sleep(max(0.0, TURN_PACE - (time.monotonic() - started)))
    return seconds


async def sequential(tab_factory: Any) -> List[float]:
    async with tab_factory() as tab:
        await paced_turns(tab, 1)  # warm-up
        return await paced_turns(tab, SEQUENTIAL_TURNS)


async def concurrent(tab_factory: Any) -> List[float]:
    async def one() -> List[float]:
        async with tab_factory() as tab:
            return await paced_turns(tab, TURNS_EACH)

    results = await asyncio.gather(*(one() for _ in range(CONCURRENT_SOCKETS)))
    return [seconds for result in results for seconds in result]


async def fan_out(stack: RasaStack, replica: RasaStack, secret: str) -> Tuple[List[float], int]:
    """Seconds from the sending tab's reply (server A) to the other tab's copy (server B)."""
    shared = token(secret)
    delays: List[float] = []
    async with OurTab(stack.base_url, shared) as sender, OurTab(replica.base_url, shared) as other:
        for _ in range(FAN_OUT_TURNS):
            await sender.ws.send(
                json.dumps({"type": "message", "id": secrets.token_hex(8), "text": TEXT})
            )
            own_at, own = await sender.next_bot()
            while True:
                seen_at, seen = await other.next_bot()
                if seen["id"] == own["id"]:
                    break
            delays.append(seen_at - own_at)
            await sender.turn_done()
            await asyncio.sleep(TURN_PACE)
    return delays, len(delays)


async def stock_fan_out(stack: RasaStack, replica: RasaStack) -> int:
    """Replies a second stock tab (on server B) sees of turns sent on server A: none can be."""
    async with StockTab(stack.base_url) as sender, StockTab(replica.base_url) as other:
        for _ in range(3):
            await sender.turn()
        await asyncio.sleep(1)
        return other.replies.qsize()


async def reconnect_history(stack: RasaStack, secret: str) -> int:
    """Messages our tab shows after reconnecting (the stock channel replays none, and its new
    socket id is a new conversation)."""
    same_user = token(secret)
    async with OurTab(stack.base_url, same_user) as tab:
        await tab.turn()
    async with OurTab(stack.base_url, same_user) as tab:
        return len(tab.history)


async def run(stack: RasaStack, replica: RasaStack) -> Dict[str, Any]:
    secret = stack.env["WEBCHAT_JWT_SECRET"]
    return {
        "sequential": {
            "ours": await sequential(lambda: OurTab(stack.base_url, token(secret))),
            "stock": await sequential(lambda: StockTab(stack.base_url)),
        },
        "concurrent": {
            "ours": await concurrent(lambda: OurTab(stack.base_url, token(secret))),
            "stock": await concurrent(lambda: StockTab(stack.base_url)),
        },
        "fan_out": await fan_out(stack, replica, secret),
        "stock_fan_out": await stock_fan_out(stack, replica),
        "reconnect": await reconnect_history(stack, secret),
    }


def main() -> int:
    with bench_setup() as setup:
        stack = setup.rasa(credentials_with_socketio(setup.work))
        stack.start()
        replica = setup.keep(stack.replica())
        results = asyncio.run(run(stack, replica))

    failures: List[str] = []
    print(f"{'case':<28} {'channel':<20} {'n':>3} {'p50 ms':>8} {'p99 ms':>8} {'p50 ratio':>9}")
    for case, label in (("sequential", "1 socket, in a row"), ("concurrent", "8 sockets at once")):
        ours, stock = results[case]["ours"], results[case]["stock"]
        ratio = percentile(ours, 0.5) / percentile(stock, 0.5)
        for name, sample, shown in (
            ("ours (webchat)", ours, f"{ratio:>9.2f}"),
            ("stock (socketio)", stock, f"{1:>9.2f}"),
        ):
            print(
                f"{'turn, ' + label:<28} {name:<20} {len(sample):>3} "
                f"{percentile(sample, 0.5) * 1000:>8.1f} {percentile(sample, 0.99) * 1000:>8.1f} "
                f"{shown}"
            )
        if percentile(ours, 0.5) > 1.2 * percentile(stock, 0.5) + 0.02:
            failures.append(f"{case}: our p50 is above 1.2x the stock channel's + 20 ms")
    delays, seen = results["fan_out"]
    print(
        f"{'fan-out to a tab on server B':<28} {'ours (webchat)':<20} {seen:>3} "
        f"{percentile(delays, 0.5) * 1000:>8.1f} {percentile(delays, 0.99) * 1000:>8.1f}"
        "   (after the sending tab's reply)"
    )
    print(
        f"{'fan-out to a tab on server B':<28} {'stock (socketio)':<20} "
        f"{results['stock_fan_out']:>3} replies seen of 3 (no fan-out)"
    )
    ours_history = results["reconnect"]
    print(
        f"reconnect: ours shows {ours_history} earlier messages; stock replays none "
        "(its new socket id is a new conversation)"
    )
    if seen != FAN_OUT_TURNS:
        failures.append(f"fan-out: {seen} of {FAN_OUT_TURNS} replies reached the other tab")
    if percentile(delays, 0.99) > 1.0:
        failures.append("fan-out: p99 above 1 s")
    if ours_history < 2:
        failures.append("reconnect: our history lacks the earlier turn")
    for failure in failures:
        print("TARGET MISSED: " + failure)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
