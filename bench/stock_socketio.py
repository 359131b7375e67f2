"""A client of Rasa's stock ``socketio`` channel for the benchmarks, speaking Engine.IO 4 over a
WebSocket (python-socketio's own async client needs a newer aiohttp than Rasa 3.6 pins for its
WebSocket transport, and long-polling would make the stock channel look slower than it is).

The channel's credentials: ``user_message_evt: user_uttered``, ``bot_message_evt:
bot_uttered``, ``session_persistence: false`` (each socket is its own conversation).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Callable, Optional

import websockets


class StockSocketIo:
    """One socket of the stock channel; ``on_bot`` is called with the arrival time
    (``time.perf_counter()``) of each bot message."""

    def __init__(self, base_url: str, on_bot: Callable[[float], None]) -> None:
        self.url = base_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        self.on_bot = on_bot
        self.sid = ""
        self._reader: Optional[asyncio.Task] = None

    async def open(self) -> None:
        self.ws = await websockets.connect(self.url, open_timeout=60)
        assert (await asyncio.wait_for(self.ws.recv(), 60)).startswith("0")  # Engine.IO open
        await self.ws.send("40")  # connect to the default namespace
        connected = await asyncio.wait_for(self.ws.recv(), 60)
        assert connected.startswith("40"), connected
        self.sid = json.loads(connected[2:])["sid"]
        self._reader = asyncio.create_task(self._read())

    async def say(self, text: str) -> None:
        emit = ["user_uttered", {"message": text, "session_id": self.sid}]
        await self.ws.send("42" + json.dumps(emit))

    async def _read(self) -> None:
        async for packet in self.ws:
            if packet == "2":
                await self.ws.send("3")  # Engine.IO pong
            elif packet.startswith("42"):
                event, *_ = json.loads(packet[2:])
                if event == "bot_uttered":
                    self.on_bot(time.perf_counter())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self.ws.close()


def stock_socketio_credentials() -> str:
    """The ``socketio:`` section of credentials.yml the clients above expect."""
    return (
        "socketio:\n  user_message_evt: user_uttered\n  bot_message_evt: bot_uttered\n"
        "  session_persistence: false\n"
    )
